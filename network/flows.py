"""A fluid-flow network on the simpy clock: pipes shared max-min fairly by flows."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import simpy

from network.fairness import max_min_rates
from network.overhead import TCP_IP, ProtocolOverhead

DONE_BYTES = 1e-9  # a flow with this little left to serve is finished (float slack)


@dataclass(frozen=True, eq=False)
class Pipe:
    """One direction of one link: a capacity shared by the flows crossing it."""

    name: str
    rate_mbps: float  # capacity, 1 Mbit/s = 1e6 bit/s
    delay_s: float = 0.0  # one-way propagation delay this pipe adds

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'"name" must be a non-empty string, got {self.name!r}')
        _check_number(self.rate_mbps, "rate_mbps", positive=True)
        _check_number(self.delay_s, "delay_s", positive=False)

    @property
    def rate_bytes_per_s(self) -> float:
        """Capacity in bytes per second."""
        return self.rate_mbps * 1e6 / 8


@dataclass(frozen=True)
class TransferRecord:
    """One finished transfer, in simulated seconds."""

    label: str
    start_s: float  # when the transfer was asked for
    end_s: float  # when its last byte arrived
    payload_bytes: int
    wire_bytes: int  # payload plus protocol overhead
    status: str = "ok"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(eq=False)
class _Flow:
    """The bandwidth-holding part of a transfer: wire bytes still to serve."""

    path: tuple[Pipe, ...]
    remaining_bytes: float
    served: simpy.Event  # succeeds when the last byte has left the sender
    rate_bytes_per_s: float = 0.0
    finish_at_s: float = field(default=math.inf)  # projected at the current rate


class Network:
    """Pipes and the flows crossing them, timed as a fluid on the simpy clock.

    Each active flow gets its max-min fair share over the pipes of its path; shares are
    recomputed whenever a flow starts or finishes. A transfer ends once its last byte is
    served plus the path's one-way propagation delay.

    Read times from the records (or run until a process), not from ``env.now`` after
    ``env.run()``: simpy cannot cancel a timeout, so a wake-up made obsolete by a change of
    flows may still move the clock past the last transfer.
    """

    def __init__(self, env: simpy.Environment, *, overhead: ProtocolOverhead = TCP_IP) -> None:
        if not isinstance(overhead, ProtocolOverhead):
            raise ValueError(f'"overhead" must be a ProtocolOverhead, got {overhead!r}')
        self.env = env
        self.overhead = overhead
        self.records: list[TransferRecord] = []  # finished transfers, in completion order
        self._pipes: dict[str, Pipe] = {}
        self._flows: list[_Flow] = []  # insertion order breaks ties
        self._updated_s = env.now  # when remaining_bytes were last brought up to date
        self._changed = env.event()  # wakes the controller when the set of flows changes
        self._wake: simpy.Timeout | None = None  # the controller's pending alarm
        self._wake_at_s = math.inf
        self._controller: simpy.Process | None = None

    # -- building -------------------------------------------------------------------------
    def pipe(self, name: str, *, rate_mbps: float, delay_s: float = 0.0) -> Pipe:
        """Add a pipe of `rate_mbps` capacity that adds `delay_s` of propagation delay."""
        if name in self._pipes:
            raise ValueError(f'"name" must be unique, pipe {name!r} already exists')
        new_pipe = Pipe(name, rate_mbps, delay_s)
        self._pipes[name] = new_pipe
        return new_pipe

    # -- transferring ---------------------------------------------------------------------
    @property
    def active_flows(self) -> int:
        """Transfers still having bytes to serve (not those only propagating)."""
        return len(self._flows)

    def transfer(
        self, payload_bytes: int, path: Sequence[Pipe], *, label: str = ""
    ) -> simpy.Process:
        """Start sending `payload_bytes` along `path`; the process's value is a TransferRecord."""
        wire_bytes = self.overhead.wire_bytes(payload_bytes)  # validates payload_bytes
        hops = self._checked_path(path)
        start_s = float(self.env.now)
        return self.env.process(self.transmit(payload_bytes, wire_bytes, hops, label, start_s))

    def transmit(
        self,
        payload_bytes: int,
        wire_bytes: int,
        path: tuple[Pipe, ...],
        label: str,
        start_s: float,
    ) -> Generator[simpy.Event, object, TransferRecord]:
        """Serve the wire bytes at the fair rate, then propagate them along the path."""
        if wire_bytes > 0:
            yield self._start_flow(wire_bytes, path)
        yield self.env.timeout(sum(p.delay_s for p in path))
        record = TransferRecord(label, start_s, float(self.env.now), payload_bytes, wire_bytes)
        self.records.append(record)
        return record

    def _checked_path(self, path: Sequence[Pipe]) -> tuple[Pipe, ...]:
        """The path as a tuple, once every pipe is known here and appears once."""
        hops = tuple(path)
        if not hops:
            raise ValueError('"path" must cross at least one pipe')
        for hop in hops:
            if not isinstance(hop, Pipe) or self._pipes.get(hop.name) is not hop:
                raise ValueError(f'"path" must hold pipes of this network, got {hop!r}')
        if len(set(hops)) != len(hops):
            raise ValueError(f'"path" must cross each pipe once, got {[p.name for p in hops]}')
        return hops

    def _start_flow(self, wire_bytes: int, path: tuple[Pipe, ...]) -> simpy.Event:
        """Add a flow to the shared pipes; the returned event fires when it is served."""
        self._advance()
        flow = _Flow(path, float(wire_bytes), self.env.event())
        self._flows.append(flow)
        self._notify()
        return flow.served

    # -- the controller -------------------------------------------------------------------
    def _notify(self) -> None:
        """Tell the controller the set of flows changed; start it on first use."""
        if self._controller is None:
            self._controller = self.env.process(self._share())
        if not self._changed.triggered:
            self._changed.succeed()

    def _share(self) -> Generator[simpy.Event, object, None]:
        """Share the pipes: settle finished flows, reallocate, sleep until the next change."""
        while True:
            self._advance()
            self._finish_served()
            self._allocate()
            yield self._next_wakeup()

    def _advance(self) -> None:
        """Serve every flow at its current rate up to now."""
        elapsed_s = self.env.now - self._updated_s
        if elapsed_s > 0:
            for flow in self._flows:
                served_bytes = flow.rate_bytes_per_s * elapsed_s
                flow.remaining_bytes = max(0.0, flow.remaining_bytes - served_bytes)
        self._updated_s = self.env.now

    def _finish_served(self) -> None:
        """Remove the flows whose last byte has been served and wake their transfers."""
        now_s = self.env.now
        done = [f for f in self._flows if _is_served(f, now_s)]
        done_set = set(done)
        self._flows = [f for f in self._flows if f not in done_set]
        for flow in done:
            flow.remaining_bytes = 0.0
            flow.served.succeed()

    def _allocate(self) -> None:
        """Give every flow its max-min fair rate and project when it will be served."""
        capacity = {p: p.rate_bytes_per_s for p in self._pipes.values()}
        rates = max_min_rates([f.path for f in self._flows], capacity)
        for flow, rate in zip(self._flows, rates):
            flow.rate_bytes_per_s = rate
            flow.finish_at_s = self.env.now + _wait_s(flow.remaining_bytes, rate)

    def _next_wakeup(self) -> simpy.Event:
        """The event the controller sleeps on: a change of flows or the next completion."""
        if self._changed.triggered:
            self._changed = self.env.event()
        if not self._flows:
            return self._changed
        return self._changed | self._alarm()

    def _alarm(self) -> simpy.Event:
        """A timeout at the earliest projected completion; reuse a pending one if not later."""
        waits_s = [_wait_s(f.remaining_bytes, f.rate_bytes_per_s) for f in self._flows]
        wait_s = min(waits_s)
        due_s = self.env.now + wait_s
        pending = self._wake is not None and not self._wake.processed
        if not (pending and self._wake_at_s <= due_s):
            self._wake = self.env.timeout(wait_s)
            self._wake_at_s = due_s
        assert self._wake is not None
        return self._wake


def _is_served(flow: _Flow, now_s: float) -> bool:
    """Whether the flow's last byte has left: its projected end is here, or nothing is left."""
    return flow.finish_at_s <= now_s or flow.remaining_bytes <= DONE_BYTES


def _wait_s(remaining_bytes: float, rate_bytes_per_s: float) -> float:
    """Seconds to serve the remaining bytes at the rate (never negative)."""
    if rate_bytes_per_s <= 0:
        return math.inf
    return max(0.0, remaining_bytes / rate_bytes_per_s)


def _check_number(value: float, name: str, *, positive: bool) -> None:
    """Raise ValueError naming `name` unless `value` is finite and > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'"{name}" must be a number, got {value!r}')
    if positive and not value > 0:
        raise ValueError(f'"{name}" must be > 0, got {value!r}')
    if not positive and not value >= 0:
        raise ValueError(f'"{name}" must be >= 0, got {value!r}')
    if not math.isfinite(value):
        raise ValueError(f'"{name}" must be finite, got {value!r}')
