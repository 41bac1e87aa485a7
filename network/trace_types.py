"""Link capacity traces: mahimahi delivery opportunities and piecewise-constant rates.

Both kinds answer the same two questions a pipe asks of its capacity: how many bytes it can
carry in (t0, t1], and the earliest time by which it has carried n bytes after t0. Traces
repeat after their period, as ``mm-link`` replays them. Times are simulated seconds from
simulated time 0, which is trace time 0. Reading trace files is in `network.trace_files`,
generating seeded ones in `network.trace_synthetic`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PACKET_BYTES = 1500  # bytes one mahimahi delivery opportunity carries
EPS_MS = 1e-6  # times within this many ms of an opportunity count as reaching it
BITS_PER_MBIT = 1e6


class TraceError(ValueError):
    """A trace that cannot be used; the message starts with `file:line:` where one applies."""


def _is_ms(value: object) -> bool:
    """Whether `value` is a usable ms timestamp: an int >= 0."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < 2**63


def _needed(count: float) -> int:
    """Whole units needed to cover `count`, forgiving float noise just above an integer."""
    return math.ceil(count - max(1e-9, abs(count) * 1e-12))


@dataclass(frozen=True, eq=False)
class OpportunityTrace:
    """Mahimahi packet-delivery opportunities: one ms timestamp per 1500-byte packet.

    Repeated timestamps are several packets in that ms. The last timestamp is the period:
    the trace repeats shifted by it (so a leading 0 coincides with the period's end).
    An opportunity carries bytes only to a transfer that started strictly before it.
    """

    timestamps_ms: tuple[int, ...]  # non-decreasing, >= 0, last > 0
    source: str = "<trace>"  # where it came from, for messages
    varying = True  # a share of it follows its opportunities, not a fixed rate

    def __post_init__(self) -> None:
        stamps = tuple(self.timestamps_ms)
        object.__setattr__(self, "timestamps_ms", stamps)
        if not stamps:
            raise TraceError(f"{self.source}: empty trace, no timestamps")
        arr = np.asarray(stamps)
        too_large = arr.dtype.kind == "u" and int(arr.max()) >= 2**63  # numpy's uint64 for huge ints
        if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.min() < 0 or too_large:
            i = next((i for i, ms in enumerate(stamps) if not _is_ms(ms)), 0)
            raise TraceError(
                f"{self.source}:{i + 1}: timestamp must be an int in [0, 2^63), got {stamps[i]!r}"
            )
        drops = np.flatnonzero(np.diff(arr) < 0)
        if drops.size:
            i = int(drops[0]) + 1
            raise TraceError(
                f"{self.source}:{i + 1}: timestamp {stamps[i]} is before {stamps[i - 1]}"
            )
        if stamps[-1] == 0:
            raise TraceError(f"{self.source}:{len(stamps)}: trace must last > 0 ms, last is 0")

    @property
    def period_ms(self) -> int:
        """Length of one replay of the trace; it then repeats shifted by this."""
        return int(self.timestamps_ms[-1])

    @property
    def mean_bytes_per_s(self) -> float:
        """Average capacity over one period."""
        return len(self.timestamps_ms) * PACKET_BYTES / (self.period_ms / 1000)

    @property
    def mean_rate_mbps(self) -> float:
        return self.mean_bytes_per_s * 8 / BITS_PER_MBIT

    def opportunities_until(self, t_s: float) -> int:
        """Opportunities at times <= t_s since time 0, wrap-arounds included."""
        t_ms = t_s * 1000.0
        if t_ms + EPS_MS < 0:
            return 0
        laps = math.floor((t_ms + EPS_MS) / self.period_ms)
        into_lap_ms = t_ms - laps * self.period_ms
        return laps * len(self.timestamps_ms) + bisect.bisect_right(
            self.timestamps_ms, into_lap_ms + EPS_MS
        )

    def opportunity_time_s(self, number: int) -> float:
        """Time of the `number`-th opportunity (1-based) since time 0."""
        if number < 1:
            raise ValueError(f'"number" must be >= 1, got {number}')
        laps, index = divmod(number - 1, len(self.timestamps_ms))
        return (self.timestamps_ms[index] + laps * self.period_ms) / 1000.0

    def served_bytes(self, t0_s: float, t1_s: float) -> float:
        """Bytes the opportunities in (t0_s, t1_s] can carry."""
        return PACKET_BYTES * (self.opportunities_until(t1_s) - self.opportunities_until(t0_s))

    def time_to_serve(self, t0_s: float, n_bytes: float) -> float:
        """When the opportunities after t0_s have carried `n_bytes`: the last one's time."""
        if n_bytes <= 0:
            return t0_s
        needed = _needed(n_bytes / PACKET_BYTES)
        if needed <= 0:
            return t0_s
        return self.opportunity_time_s(self.opportunities_until(t0_s) + needed)

    def to_mahimahi(self) -> str:
        """The trace as a mahimahi file's text."""
        return "".join(f"{ms}\n" for ms in self.timestamps_ms)

    def write(self, path: str | Path) -> None:
        """Write the trace as a mahimahi file."""
        Path(path).write_text(self.to_mahimahi())


@dataclass(frozen=True, eq=False)
class RateTrace:
    """A piecewise-constant rate: `rates_mbps[k]` holds over [k, k+1) x step_s, then repeats."""

    rates_mbps: tuple[float, ...]
    step_s: float = 1.0  # how long each rate holds
    source: str = "<trace>"
    varying = True  # a share of it follows the rate, not a fixed rate
    _cum_bytes: tuple[float, ...] = field(init=False, repr=False)  # bytes by each step start

    def __post_init__(self) -> None:
        rates = tuple(float(r) for r in self.rates_mbps)
        object.__setattr__(self, "rates_mbps", rates)
        if not rates:
            raise TraceError(f"{self.source}: empty trace, no rates")
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise TraceError(f'{self.source}: "step_s" must be > 0, got {self.step_s!r}')
        for k, rate in enumerate(rates):
            if not (math.isfinite(rate) and rate >= 0):
                raise TraceError(f"{self.source}:{k + 1}: rate must be >= 0, got {rate!r}")
        cum = [0.0]
        for rate in rates:
            cum.append(cum[-1] + rate * BITS_PER_MBIT / 8 * self.step_s)
        if cum[-1] <= 0:
            raise TraceError(f"{self.source}: every rate is 0, the trace carries nothing")
        object.__setattr__(self, "_cum_bytes", tuple(cum))

    @property
    def period_s(self) -> float:
        return len(self.rates_mbps) * self.step_s

    @property
    def mean_bytes_per_s(self) -> float:
        return self._cum_bytes[-1] / self.period_s

    @property
    def mean_rate_mbps(self) -> float:
        return self.mean_bytes_per_s * 8 / BITS_PER_MBIT

    def bytes_until(self, t_s: float) -> float:
        """Bytes the rate can carry over [0, t_s]."""
        if t_s <= 0:
            return 0.0
        laps = math.floor(t_s / self.period_s)
        into_s = t_s - laps * self.period_s
        step = min(int(into_s / self.step_s), len(self.rates_mbps) - 1)
        rate_bytes_per_s = self.rates_mbps[step] * BITS_PER_MBIT / 8
        partial = rate_bytes_per_s * (into_s - step * self.step_s)
        return laps * self._cum_bytes[-1] + self._cum_bytes[step] + partial

    def time_for_bytes(self, n_bytes: float) -> float:
        """Earliest time by which the rate has carried `n_bytes` since time 0."""
        if n_bytes <= 0:
            return 0.0
        total = self._cum_bytes[-1]
        laps = math.ceil(n_bytes / total) - 1
        rest = n_bytes - laps * total  # in (0, total]
        step = bisect.bisect_left(self._cum_bytes, rest) - 1
        step = min(max(0, step), len(self.rates_mbps) - 1)
        rate_bytes_per_s = self.rates_mbps[step] * BITS_PER_MBIT / 8
        into_step_s = (rest - self._cum_bytes[step]) / rate_bytes_per_s
        return laps * self.period_s + step * self.step_s + min(self.step_s, into_step_s)

    def served_bytes(self, t0_s: float, t1_s: float) -> float:
        """Bytes the rate can carry in (t0_s, t1_s]."""
        return max(0.0, self.bytes_until(t1_s) - self.bytes_until(t0_s))

    def time_to_serve(self, t0_s: float, n_bytes: float) -> float:
        """When `n_bytes` have been carried after t0_s."""
        if n_bytes <= 0:
            return t0_s
        return max(t0_s, self.time_for_bytes(self.bytes_until(t0_s) + n_bytes))

    def to_opportunities(self) -> OpportunityTrace:
        """The same capacity as mahimahi opportunities over one period.

        The k-th opportunity falls on the first whole ms by which the rate has carried k
        packets; the period's bytes are rounded to whole packets and the last opportunity
        is placed at the period's end, so the result wraps with the same period.
        """
        period_ms = round(self.period_s * 1000)
        if not math.isclose(period_ms, self.period_s * 1000, abs_tol=1e-6):
            raise TraceError(f"{self.source}: period {self.period_s} s is not a whole ms")
        packets = round(self._cum_bytes[-1] / PACKET_BYTES)
        if packets < 1:
            raise TraceError(f"{self.source}: carries less than one packet per period")
        scale = packets * PACKET_BYTES / self._cum_bytes[-1]
        targets = np.arange(1, packets + 1, dtype=float) * PACKET_BYTES / scale
        cum = np.asarray(self._cum_bytes)
        step = np.clip(np.searchsorted(cum, targets, side="left") - 1, 0, len(cum) - 2)
        rate = np.asarray(self.rates_mbps)[step] * BITS_PER_MBIT / 8
        into_s = np.divide(targets - cum[step], rate, out=np.zeros_like(targets), where=rate > 0)
        times_ms = np.ceil((step * self.step_s + into_s) * 1000 - EPS_MS).astype(np.int64)
        times_ms = np.clip(times_ms, 0, period_ms)
        times_ms[-1] = period_ms
        return OpportunityTrace(tuple(int(ms) for ms in times_ms), source=self.source)


@dataclass(frozen=True, eq=False)
class ShiftedTrace:
    """A trace replayed from `offset_s` into it: simulated time t is trace time t + offset_s.

    Lets clients that share one trace file see different stretches of it.
    """

    trace: OpportunityTrace | RateTrace
    offset_s: float  # >= 0
    varying = True

    def __post_init__(self) -> None:
        if not isinstance(self.trace, (OpportunityTrace, RateTrace)):
            kinds = "an OpportunityTrace or RateTrace"
            raise ValueError(f'"trace" must be {kinds}, got {self.trace!r}')
        if not (isinstance(self.offset_s, (int, float)) and math.isfinite(self.offset_s)):
            raise ValueError(f'"offset_s" must be a finite number, got {self.offset_s!r}')
        if self.offset_s < 0:
            raise ValueError(f'"offset_s" must be >= 0, got {self.offset_s!r}')

    @property
    def mean_bytes_per_s(self) -> float:
        return self.trace.mean_bytes_per_s

    @property
    def mean_rate_mbps(self) -> float:
        return self.trace.mean_rate_mbps

    def served_bytes(self, t0_s: float, t1_s: float) -> float:
        return self.trace.served_bytes(t0_s + self.offset_s, t1_s + self.offset_s)

    def time_to_serve(self, t0_s: float, n_bytes: float) -> float:
        if n_bytes <= 0:
            return t0_s
        return max(t0_s, self.trace.time_to_serve(t0_s + self.offset_s, n_bytes) - self.offset_s)

