"""One direction of one link, composed from small parts.

A `Pipe` nests, as mahimahi shells do: a capacity (`ConstantRate`, or a trace from
`network.trace_types`), a propagation delay with optional `Jitter`, random loss, and
scheduled `Outage`s. Each part is a small frozen value; the `Network` plays them on its clock.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Literal, Protocol, Union

import numpy as np

from network.trace_types import OpportunityTrace, RateTrace, ShiftedTrace

MATHIS_C = math.sqrt(3 / 2)  # Mathis et al. 1997, periodic loss, no delayed ACKs
EPS_S = 1e-9  # times this close to an outage boundary count as reaching it


class Capacity(Protocol):
    """What a pipe can carry over time, as bytes served after a moment."""

    varying: bool  # False: a constant rate, so a share of it is a fixed rate

    @property
    def mean_bytes_per_s(self) -> float: ...

    def served_bytes(self, t0_s: float, t1_s: float) -> float: ...

    def time_to_serve(self, t0_s: float, n_bytes: float) -> float: ...


@dataclass(frozen=True)
class ConstantRate:
    """A fixed capacity."""

    rate_mbps: float  # 1 Mbit/s = 1e6 bit/s
    varying = False

    def __post_init__(self) -> None:
        check_number(self.rate_mbps, "rate_mbps", positive=True)

    @property
    def mean_bytes_per_s(self) -> float:
        return self.rate_mbps * 1e6 / 8

    def served_bytes(self, t0_s: float, t1_s: float) -> float:
        return self.mean_bytes_per_s * max(0.0, t1_s - t0_s)

    def time_to_serve(self, t0_s: float, n_bytes: float) -> float:
        return t0_s + max(0.0, n_bytes) / self.mean_bytes_per_s


Trace = Union[OpportunityTrace, RateTrace, ShiftedTrace]


@dataclass(frozen=True)
class Jitter:
    """Extra one-way delay drawn once per transfer and pipe, from a seeded stream.

    uniform: U(0, scale_s); exponential: mean scale_s; normal: N(0, scale_s), with the
    pipe's total delay kept >= 0. Each pipe draws from its own stream, seeded by
    (seed, pipe name), so adding a pipe or a transfer elsewhere leaves its draws alone.
    """

    distribution: Literal["uniform", "exponential", "normal"]
    scale_s: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.distribution not in ("uniform", "exponential", "normal"):
            raise ValueError(
                f'"distribution" must be uniform, exponential or normal, got {self.distribution!r}'
            )
        check_number(self.scale_s, "scale_s", positive=False)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f'"seed" must be an int >= 0, got {self.seed!r}')

    def stream(self, pipe_name: str) -> np.random.Generator:
        """The pipe's own generator."""
        return np.random.default_rng([self.seed, *pipe_name.encode()])

    def draw_s(self, rng: np.random.Generator) -> float:
        """One jitter sample in seconds (may be negative for `normal`)."""
        if self.distribution == "uniform":
            return float(rng.uniform(0.0, self.scale_s))
        if self.distribution == "exponential":
            return float(rng.exponential(self.scale_s)) if self.scale_s > 0 else 0.0
        return float(rng.normal(0.0, self.scale_s))


@dataclass(frozen=True)
class Outage:
    """The pipe is down over [start_s, end_s): no byte crosses it."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        start, end = self.start_s, self.end_s
        if type(start) is float and type(end) is float and 0.0 <= start < end < math.inf:
            return  # the common case, checked at once (a fleet's schedules make millions)
        check_number(start, "start_s", positive=False)
        check_number(end, "end_s", positive=True)
        if not self.end_s > self.start_s:
            raise ValueError(f'"end_s" must be > "start_s", got {self.start_s}..{self.end_s}')


@dataclass(frozen=True)
class OutagePolicy:
    """What a transfer does when a pipe on its path is down.

    stall: it waits for the pipe to come back, then resumes; a stall that would last longer
    than `timeout_s` ends the transfer at stall start + timeout_s with status "timeout".
    fail: it ends at once with status "failed".
    """

    action: Literal["stall", "fail"] = "stall"
    timeout_s: float = math.inf

    def __post_init__(self) -> None:
        if self.action not in ("stall", "fail"):
            raise ValueError(f'"action" must be stall or fail, got {self.action!r}')
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ValueError(f'"timeout_s" must be > 0, got {self.timeout_s!r}')


@dataclass(frozen=True, eq=False)
class Pipe:
    """One direction of one link: a capacity shared by the flows crossing it.

    Give either `rate_mbps` (constant) or `trace` (time-varying capacity).
    """

    name: str
    rate_mbps: float | None = None  # constant capacity, 1 Mbit/s = 1e6 bit/s
    delay_s: float = 0.0  # one-way propagation delay this pipe adds
    trace: Trace | None = None  # time-varying capacity instead of rate_mbps
    jitter: Jitter | None = None  # extra delay per transfer
    loss_rate: float = 0.0  # probability that a packet is lost on this pipe
    outages: tuple[Outage, ...] = ()  # when the pipe is down, sorted, not overlapping
    capacity: Capacity = field(init=False, repr=False)
    _bounds_s: tuple[float, ...] = field(init=False, repr=False)  # start, end, start, ...
    _rate: float = field(init=False, repr=False)  # mean bytes/s, read on every share

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'"name" must be a non-empty string, got {self.name!r}')
        object.__setattr__(self, "capacity", self._capacity())
        object.__setattr__(self, "_rate", self.capacity.mean_bytes_per_s)
        check_number(self.delay_s, "delay_s", positive=False)
        if self.jitter is not None and not isinstance(self.jitter, Jitter):
            raise ValueError(f'"jitter" must be a Jitter, got {self.jitter!r}')
        check_number(self.loss_rate, "loss_rate", positive=False)
        if not self.loss_rate < 1:
            raise ValueError(f'"loss_rate" must be < 1, got {self.loss_rate!r}')
        object.__setattr__(self, "outages", tuple(self.outages))
        object.__setattr__(self, "_bounds_s", _outage_bounds(self.outages))

    def _capacity(self) -> Capacity:
        """The capacity part: the constant rate or the trace, exactly one of them."""
        if (self.rate_mbps is None) == (self.trace is None):
            raise ValueError('exactly one of "rate_mbps" and "trace" must be given')
        if self.trace is None:
            check_number(self.rate_mbps, "rate_mbps", positive=True)
            return ConstantRate(float(self.rate_mbps))  # type: ignore[arg-type]
        if not isinstance(self.trace, (OpportunityTrace, RateTrace, ShiftedTrace)):
            kinds = "an OpportunityTrace, RateTrace or ShiftedTrace"
            raise ValueError(f'"trace" must be {kinds}, got {self.trace!r}')
        return self.trace  # type: ignore[return-value]

    @property
    def rate_bytes_per_s(self) -> float:
        """Capacity in bytes per second (a trace's mean over its period)."""
        return self._rate

    def is_down(self, t_s: float) -> bool:
        """Whether an outage covers t_s."""
        if not self._bounds_s:
            return False
        return bisect.bisect_right(self._bounds_s, t_s + EPS_S) % 2 == 1

    def next_change_s(self, t_s: float) -> float:
        """The first outage start or end after t_s (inf if none)."""
        if not self._bounds_s:
            return math.inf
        i = bisect.bisect_right(self._bounds_s, t_s + EPS_S)
        return self._bounds_s[i] if i < len(self._bounds_s) else math.inf


def _outage_bounds(outages: tuple[Outage, ...]) -> tuple[float, ...]:
    """Outage starts and ends in one sorted tuple; overlaps are rejected."""
    bounds: list[float] = []
    for outage in outages:
        if not isinstance(outage, Outage):
            raise ValueError(f'"outages" must hold Outage values, got {outage!r}')
        if bounds and outage.start_s < bounds[-1]:
            raise ValueError(f'"outages" must be sorted and not overlap, got {outage!r}')
        bounds += [outage.start_s, outage.end_s]
    return tuple(bounds)


def mathis_wire_bytes_per_s(packet_bytes: int, rtt_s: float, loss_rate: float) -> float:
    """TCP's loss-limited rate, packet_bytes / rtt x C / sqrt(p) (inf without loss or RTT)."""
    if loss_rate <= 0 or rtt_s <= 0:
        return math.inf
    return packet_bytes / rtt_s * MATHIS_C / math.sqrt(loss_rate)


def check_number(value: object, name: str, *, positive: bool) -> None:
    """Raise ValueError naming `name` unless `value` is finite and > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'"{name}" must be a number, got {value!r}')
    if positive and not value > 0:
        raise ValueError(f'"{name}" must be > 0, got {value!r}')
    if not positive and not value >= 0:
        raise ValueError(f'"{name}" must be >= 0, got {value!r}')
    if not math.isfinite(value):
        raise ValueError(f'"{name}" must be finite, got {value!r}')
