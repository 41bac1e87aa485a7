"""When each client is online: seeded synthetic schedules, or a FedScale availability import.

A client is selectable only while online. When it goes offline during a round, its link goes
down with it (the runner turns offline windows into outages on the client's pipes, so a
transfer in flight fails there) and compute in progress is lost: either way the client-round
is a failure with its cause.

- ``always``: every client is always online.
- ``diurnal``: each client is online for ``on_fraction`` of every ``period_s`` (e.g. charging
  at night), starting at its own seeded phase, so the fleet's online share is steady while
  each client comes and goes.
- ``fedscale``: FedScale's client availability JSON, ``{client_id: {"active": [s, ...],
  "inactive": [s, ...], "finish_time": s}}``: online inside [active[i], inactive[i]), time
  taken modulo finish_time. Fleet client i takes the i-th entry in the file's order (cycling
  when the file has fewer entries than the fleet).
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.config.files import FileProblem, read_text

EPS_S = 1e-9
MIN_PERIOD_S = 1.0  # a FedScale period (finish_time) is hours to days; below a second it is no schedule


class AvailabilityError(ValueError):
    """A bad availability file: the message names the file and the entry."""


@dataclass(frozen=True)
class Schedule:
    """Online windows [start_s, end_s) within one period, repeating every `period_s`
    (math.inf: the windows are absolute and never repeat)."""

    windows: tuple[tuple[float, float], ...]
    period_s: float = math.inf

    def _window_at(self, t_s: float) -> tuple[float, float] | None:
        """The online window containing t_s, in absolute seconds, or None."""
        if not self.windows:
            return None
        base = 0.0 if math.isinf(self.period_s) else math.floor(t_s / self.period_s) * self.period_s
        local = t_s - base
        i = bisect.bisect_right(self.windows, local + EPS_S, key=lambda w: w[0]) - 1  # EPS_S: base + start - base may round down
        if i >= 0 and local < self.windows[i][1] - EPS_S:
            return base + self.windows[i][0], base + self.windows[i][1]
        return None

    def online(self, t_s: float) -> bool:
        return self._window_at(t_s) is not None

    def offline_at(self, t_s: float) -> float:
        """When the client, online at t_s, goes offline (inf if never); t_s if offline now.
        Back-to-back windows (e.g. one ending where the next period's starts) are one."""
        if (len(self.windows) == 1 and self.period_s == math.inf and self.windows[0][1] == math.inf
                and self.windows[0][0] <= t_s + EPS_S):
            return math.inf  # online from its start on for good (availability: always): the common case
        window = self._window_at(t_s)
        if window is None:
            return t_s
        end = window[1]
        while not math.isinf(end):
            nxt = self._window_at(end)
            if nxt is None:
                return end
            if end - t_s > 2 * self.period_s:  # online the whole period: never goes offline
                return math.inf
            end = nxt[1]
        return end

    def next_online(self, t_s: float) -> float:
        """The first time >= t_s the client is online (inf if never again)."""
        if self.online(t_s):
            return t_s
        if not self.windows:
            return math.inf
        if math.isinf(self.period_s):
            later = [s for s, _ in self.windows if s >= t_s]
            return min(later) if later else math.inf
        base = math.floor(t_s / self.period_s) * self.period_s
        for offset in (0.0, self.period_s):
            for s, _ in self.windows:
                if base + offset + s >= t_s:
                    return base + offset + s
        return math.inf

    def offline_windows(self, horizon_s: float) -> list[tuple[float, float]]:
        """Offline intervals [t1, t2) up to `horizon_s` (the last one ends at the horizon
        or where the client comes back)."""
        if self.windows and not math.isinf(self.period_s):
            return self._periodic_offline_windows(horizon_s)
        return self._walked_offline_windows(horizon_s)

    def _periodic_offline_windows(self, horizon_s: float) -> list[tuple[float, float]]:
        """offline_windows() of a repeating schedule: one period's gaps, tiled (a fleet of
        thousands over months has millions of them); a gap ending a period and the next
        period's first gap are one."""
        gaps, t = [], 0.0
        for start, end in sorted(self.windows):
            if start > t + EPS_S:
                gaps.append((t, start))
            t = max(t, end)
        if t < self.period_s - EPS_S:
            gaps.append((t, self.period_s))
        out: list[tuple[float, float]] = []
        for k in range(math.ceil(horizon_s / self.period_s)):
            base = k * self.period_s
            for t1, t2 in gaps:
                a, b = base + t1, min(base + t2, horizon_s)
                if a >= horizon_s:
                    break
                if out and a - out[-1][1] <= EPS_S:
                    out[-1] = (out[-1][0], b)
                else:
                    out.append((a, b))
        return out

    def _walked_offline_windows(self, horizon_s: float) -> list[tuple[float, float]]:
        out, t = [], 0.0
        while t < horizon_s:
            if len(out) > 1_000_000:
                raise RuntimeError("offline_windows: a schedule that never advances")
            if self.online(t):
                t = self.offline_at(t)
                continue
            back = self.next_online(t)
            out.append((t, min(back, horizon_s)))
            t = back
        return out


ALWAYS = Schedule(windows=((0.0, math.inf),))


class FleetSchedules:
    """Every client's schedule at once: who is online at t, in one numpy step (a fleet of
    10,000 is asked every round, FedBuff at every arrival). Schedule.online's arithmetic, so
    the answer is the same; a schedule whose windows overlap or are out of order is asked
    itself."""

    def __init__(self, schedules: list[Schedule]) -> None:
        self.schedules = schedules
        n, k = len(schedules), max((len(s.windows) for s in schedules), default=0)
        self.period_s = np.array([s.period_s for s in schedules], dtype=float)
        self.starts = np.full((n, max(k, 1)), np.inf)
        self.ends = np.full((n, max(k, 1)), -np.inf)
        self.own: list[int] = []  # asked one by one
        for i, s in enumerate(schedules):
            if any(a[1] > b[0] or a[0] > b[0] for a, b in zip(s.windows, s.windows[1:])):
                self.own.append(i)
                continue
            for j, (start, end) in enumerate(s.windows):
                self.starts[i, j], self.ends[i, j] = start, end
        self.repeats = np.isfinite(self.period_s)
        self.safe_period_s = np.where(self.repeats, self.period_s, 1.0)

    def online(self, t_s: float) -> np.ndarray:
        """A boolean per client: online at t_s."""
        base = np.where(self.repeats, np.floor(t_s / self.safe_period_s) * self.safe_period_s, 0.0)
        local = (t_s - base)[:, None]
        mask = ((self.starts <= local + EPS_S) & (local < self.ends - EPS_S)).any(axis=1)
        for i in self.own:
            mask[i] = self.schedules[i].online(t_s)
        return mask


def diurnal(n_clients: int, *, period_s: float, on_fraction: float, seed: int) -> list[Schedule]:
    """Each client online for on_fraction x period_s of every period, at a seeded phase."""
    if on_fraction >= 1.0:
        return [ALWAYS] * n_clients
    rng = np.random.default_rng([seed, 0xA7A1])
    on_s = on_fraction * period_s
    schedules = []
    for phase in rng.uniform(0.0, period_s, n_clients):
        start = float(phase)
        end = start + on_s
        if end <= period_s:
            windows = ((start, end),)
        else:  # wraps past the period's end
            windows = ((0.0, end - period_s), (start, period_s))
        schedules.append(Schedule(windows, period_s))
    return schedules


def load_fedscale(path: str | Path, n_clients: int) -> list[Schedule]:
    """Fleet schedules from a FedScale availability JSON (see the module docstring). Every
    problem is an AvailabilityError reading ``file: where: problem`` on one line."""
    try:
        text = read_text(path)
    except FileProblem as exc:
        raise AvailabilityError(f"{exc.path}: (file): {exc.problem}") from None
    path = Path(path)
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise AvailabilityError(f"{path}: line {err.lineno}: not JSON: {err.msg}") from None
    except ValueError as err:  # NaN, Infinity
        raise AvailabilityError(f"{path}: (file): {err}") from None
    except RecursionError:
        raise AvailabilityError(f"{path}: (file): JSON nested too deeply; expected "
                                f"{{client_id: {{active, inactive, finish_time}}}}") from None
    if not isinstance(raw, dict) or not raw:
        got = f"an empty {type(raw).__name__}" if raw in ({}, []) else f"a JSON {type(raw).__name__}"
        raise AvailabilityError(f"{path}: (top level): expected a non-empty object "
                                f"{{client_id: {{active, inactive, finish_time}}}}, got {got}")
    entries = [_fedscale_entry(path, key, value) for key, value in raw.items()]
    return [entries[i % len(entries)] for i in range(n_clients)]


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number of seconds")


def _seconds(value: object, where: str, what: str) -> float:
    """A JSON number of seconds, finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AvailabilityError(f"{where}: {what} must hold numbers of seconds, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise AvailabilityError(f"{where}: {what} holds a number too large for seconds") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise AvailabilityError(f"{where}: {what} must hold finite seconds >= 0, got {seconds}")
    return seconds


def _fedscale_entry(path: Path, key: str, value: object) -> Schedule:
    where = f"{path}: client {key!r}" if not key.isprintable() or not key else f"{path}: client {key}"
    if not isinstance(value, dict) or not {"active", "inactive"} <= set(value):
        raise AvailabilityError(f"{where}: expected an object with 'active' and 'inactive' lists")
    active, inactive = value["active"], value["inactive"]
    if not (isinstance(active, list) and isinstance(inactive, list)) or len(active) != len(inactive):
        raise AvailabilityError(f"{where}: 'active' and 'inactive' must be lists of equal length")
    windows = tuple((_seconds(a, where, "'active'"), _seconds(b, where, "'inactive'"))
                    for a, b in zip(active, inactive, strict=True))
    for (a, b), nxt in zip(windows, (*windows[1:], None)):
        if not b > a or (nxt is not None and nxt[0] < b):
            raise AvailabilityError(f"{where}: windows must be increasing and non-overlapping, got [{a}, {b}]")
    finish = value.get("finish_time")
    period = math.inf if finish is None else _seconds(finish, where, "'finish_time'")
    if period < MIN_PERIOD_S:
        raise AvailabilityError(f"{where}: 'finish_time' must be at least {MIN_PERIOD_S:g} s (the length of the "
                                f"repeating period), got {period}")
    if windows and not math.isinf(period) and windows[-1][1] > period:
        raise AvailabilityError(f"{where}: a window ends after finish_time {period}")
    return Schedule(windows, period)
