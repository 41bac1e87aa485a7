"""Host time -> device time, for every span of work that enters the clock.

A client's span is either dilated (host seconds x host speed / device speed, by the roofline
of testbed.host.roofline) or, under `time: throttle`, already device time (measured under the
device's CPU quota). The server is this host: its time is its own. Under `--replay-compute`
every span takes the host and device seconds recorded by an earlier run instead.
"""

from __future__ import annotations

from testbed.config.fleet import FleetClient, device_compute
from testbed.config.scenario import Scenario
from testbed.host.calibration import HostCalibration
from testbed.host.roofline import dilate, host_peak_gflops
from testbed.protocol import ComputeSpan, Failure
from testbed.sim.replay import ComputeReplay
from testbed.sim.timeline import SERVER


def compute_bound_factor(scenario: Scenario, client: FleetClient, calibration: HostCalibration) -> float:
    """Host-to-device time factor when compute-bound (failed work, CPU quotas)."""
    gflops = device_compute(client, use_accelerator=scenario.emulation.use_accelerator)
    return host_peak_gflops(calibration, scenario.framework.precision) / gflops


def cpu_quotas(scenario: Scenario, clients: list[FleetClient], calibration: HostCalibration) -> dict[int, float]:
    """Cores that make the host as slow as each device (compute-bound); only for devices
    slower than the host: a quota cannot speed a process up."""
    quotas = {}
    for c in clients:
        factor = compute_bound_factor(scenario, c, calibration)
        if factor > 1.0:
            quotas[c.client_id] = scenario.emulation.threads_per_client / factor
    return quotas


class DeviceTime:
    """The conversion the clock applies to measured work."""

    def __init__(self, scenario: Scenario, clients: list[FleetClient], calibration: HostCalibration, *,
                 throttled: dict[int, float], replay: ComputeReplay | None) -> None:
        self.scenario = scenario
        self.clients = clients
        self.calibration = calibration
        self.throttled = throttled  # client -> CPU quota (cores) under `time: throttle`
        self.replay = replay
        self._predicted: dict[tuple[int, int], tuple[object, ComputeSpan, tuple[float, float, float, str]]] = {}
        self._bound_factors: dict[int, float] = {}  # client -> its compute-bound factor (failed work)

    def span(self, rnd: int, cid: int, span: ComputeSpan) -> tuple[float, float, float, str]:
        """(host_s, device_s, factor, bound) of one measured span of client `cid`."""
        if cid in self.throttled:  # measured under the device's CPU quota: already device time
            host_s, device_s, factor, bound = span.host_s, span.host_s, 1.0, "throttled"
        else:
            host_s, device_s, factor, bound = self._dilate(self.clients[cid], span)
        if self.replay is not None:
            host_s, device_s = self.replay.lookup(rnd, cid, span.label, host_s, device_s)
            factor = device_s / host_s if host_s > 0 else float("nan")
        return host_s, device_s, factor, bound

    def failed(self, rnd: int, cid: int, outcome: Failure) -> float:
        """Device seconds of the work a failed call did (compute-bound)."""
        factor = self._bound_factors.get(cid)
        if factor is None:  # per client: a fleet round's failures are thousands of the same few devices
            factor = self._bound_factors[cid] = 1.0 if cid in self.throttled else compute_bound_factor(
                self.scenario, self.clients[cid], self.calibration)
        device_s = outcome.host_s * factor
        if self.replay is not None:
            _, device_s = self.replay.lookup(rnd, cid, "failed", outcome.host_s, device_s)
        return device_s

    def server(self, rnd: int, cid: int, label: str, host_s: float) -> tuple[float, float]:
        """(host_s, device_s) of server work labelled `label` done for client `cid`."""
        return self._on_server(rnd, cid, f"server:{label}", host_s)

    def aggregate(self, rnd: int, host_s: float) -> tuple[float, float]:
        """(host_s, device_s) of the server's aggregation of round `rnd`."""
        return self._on_server(rnd, SERVER, "aggregate", host_s)

    def _on_server(self, rnd: int, cid: int, key: str, host_s: float) -> tuple[float, float]:
        if self.replay is None:
            return host_s, host_s  # the server is this host (its GPU where it has one): its time is its own
        return self.replay.lookup(rnd, cid, key, host_s, host_s)

    def _dilate(self, client: FleetClient, span: ComputeSpan) -> tuple[float, float, float, str]:
        if span.t_end_unix:  # measured work: every span is new
            return self._dilated(client, span)
        # a predicted span (it never ran) stands for every client's same step: converted once per device
        # (the entry holds both objects, so their ids are not reused while it is there)
        key = (id(client.device), id(span))
        held = self._predicted.get(key)
        if held is None:
            held = self._predicted[key] = (client.device, span, self._dilated(client, span))
        return held[2]

    def _dilated(self, client: FleetClient, span: ComputeSpan) -> tuple[float, float, float, str]:
        d = dilate(span.host_s, workload=span.workload, host=self.calibration,
                   device_gflops=device_compute(client, use_accelerator=self.scenario.emulation.use_accelerator),
                   device_mem_bandwidth_gbps=client.device.mem_bandwidth_gbps, precision=span.precision,
                   runtime_efficiency=client.device.training_efficiency or 1.0)
        return d.host_s, d.device_s, d.factor, d.bound
