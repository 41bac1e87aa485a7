"""The fleet as the simulator sees it: each client's device profile and link pipes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_profiles import DeviceProfile, get_device, get_link
from network import Network, Outage, Pipe, ShiftedTrace, load_mahimahi
from testbed.config.schema import Scenario
from testbed.config.topology import FleetEntry, LinkSpec


@dataclass(frozen=True)
class RadioPower:
    """A link class's radio data-transfer power model (device_profiles LinkProfile radio_*)."""

    up_mw_per_mbps: float
    down_mw_per_mbps: float
    base_mw: float
    tail_s: float = 0.0  # the high-power tail after a transfer (RRC inactivity timers)
    tail_mw: float = 0.0

    def __post_init__(self) -> None:
        for name in ("up_mw_per_mbps", "down_mw_per_mbps", "base_mw", "tail_s", "tail_mw"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f'"{name}" must be >= 0, got {value}')


@dataclass(frozen=True)
class LinkRates:
    name: str
    down_mbps: float | None  # None where a trace gives the capacity
    up_mbps: float | None
    rtt_ms: float
    loss_rate: float = 0.0
    trace_down: str | None = None  # mahimahi file
    trace_up: str | None = None
    radio: RadioPower | None = None  # the link class's radio power model; None where unknown


@dataclass(frozen=True)
class FleetClient:
    client_id: int
    name: str  # e.g. pixel-7#1
    device: DeviceProfile
    link: LinkRates
    memory_budget_mb: float  # the app RAM budget (or the fleet entry's, or the scenario's, override)


def _link_rates(entry: FleetEntry) -> LinkRates:
    link = entry.link
    if isinstance(link, LinkSpec):
        return LinkRates("custom", link.down_mbps, link.up_mbps, link.rtt_ms, link.loss_rate,
                         link.trace_down, link.trace_up)
    p = get_link(link)
    radio = None
    if p.radio_base_mw is not None:
        radio = RadioPower(p.radio_up_mw_per_mbps, p.radio_down_mw_per_mbps, p.radio_base_mw,
                           p.radio_tail_s or 0.0, p.radio_tail_mw or 0.0)
    return LinkRates(p.name, p.down_mbps, p.up_mbps, p.rtt_ms, p.loss_rate,
                     str(p.trace_down) if p.trace_down else None, str(p.trace_up) if p.trace_up else None,
                     radio)


def expand_fleet(scenario: Scenario) -> list[FleetClient]:
    """Fleet entries with counts -> one FleetClient per client id, in file order."""
    clients: list[FleetClient] = []
    for entry in scenario.fleet:
        device = get_device(entry.device)
        budget = entry.memory_limit_mb or scenario.emulation.memory_limit_mb or device.app_ram_budget_mb
        for k in range(entry.count):
            name = f"{device.name}#{k + 1}" if entry.count > 1 else device.name
            clients.append(FleetClient(len(clients), name, device, _link_rates(entry), float(budget)))
    return clients


def device_compute(client: FleetClient, *, use_accelerator: bool) -> float:
    """Sustained GFLOP/s the device brings to training: its accelerator where it has one."""
    accel = client.device.accelerator_gflops
    return accel if use_accelerator and accel else client.device.cpu_gflops


@dataclass(frozen=True)
class ClientPipes:
    up: Pipe
    down: Pipe
    uplink: tuple[Pipe, ...]  # the whole path up: (up, the server's in), built once
    downlink: tuple[Pipe, ...]  # the whole path down: (the server's out, down)


@dataclass(frozen=True)
class Topology:
    """Star topology: every client's access link, and the server's shared access link."""

    server_in: Pipe  # the server's ingress: every upload crosses it
    server_out: Pipe  # the server's egress: every download crosses it
    clients: dict[int, ClientPipes]

    def uplink_path(self, client_id: int) -> tuple[Pipe, ...]:
        return self.clients[client_id].uplink

    def downlink_path(self, client_id: int) -> tuple[Pipe, ...]:
        return self.clients[client_id].downlink


def build_topology(net: Network, scenario: Scenario, clients: list[FleetClient],
                   outages: dict[int, list[Outage]] | None = None) -> Topology:
    """The server's pipes and each client's; `outages` (client -> windows when its link is
    down: scenario-wide outages, offline periods) go on both of the client's pipes."""
    srv = scenario.server.link
    half_s = srv.rtt_ms / 2000.0
    server_in = net.pipe("server.in", rate_mbps=srv.rate_mbps, delay_s=half_s)
    server_out = net.pipe("server.out", rate_mbps=srv.rate_mbps, delay_s=half_s)
    rng = np.random.default_rng([scenario.seed, 7])
    traces: dict[str, object] = {}  # file -> its trace, read once however many clients replay it
    pipes = {}
    for c in clients:
        up = _client_pipe(net, f"client{c.client_id}.up", c.link, "up", rng, (outages or {}).get(c.client_id, []),
                          traces)
        down = _client_pipe(net, f"client{c.client_id}.down", c.link, "down", rng,
                            (outages or {}).get(c.client_id, []), traces)
        pipes[c.client_id] = ClientPipes(up, down, (up, server_in), (server_out, down))
    return Topology(server_in, server_out, pipes)


def _client_pipe(net: Network, name: str, link: LinkRates, direction: str, rng: np.random.Generator,
                 outages: list[Outage], traces: dict) -> Pipe:
    """A constant-rate pipe, or a trace pipe started at a random (seeded) point of its trace so
    that clients sharing a trace file do not fade in lockstep."""
    delay_s = link.rtt_ms / 2000.0
    path = getattr(link, f"trace_{direction}")
    if path is None:
        return net.pipe(name, rate_mbps=getattr(link, f"{direction}_mbps"), delay_s=delay_s, loss_rate=link.loss_rate,
                        outages=outages)
    trace = traces.get(path) or traces.setdefault(path, load_mahimahi(path))
    shifted = ShiftedTrace(trace, float(rng.uniform(0.0, trace.period_ms / 1000.0)))
    return net.pipe(name, trace=shifted, delay_s=delay_s, loss_rate=link.loss_rate, outages=outages)
