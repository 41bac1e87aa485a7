"""Reuse a previous run's measured compute durations (``testbed run --replay-compute DIR``).

Simulated times come from measured compute, which varies a little between runs. Replaying
the host and device seconds recorded in a run's ``events.csv`` makes the whole rounds
table, simulated times included, identical for the same scenario and seed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

Key = tuple[int, int, str, int]  # (round, client, label, occurrence)


class ReplayError(ValueError):
    pass


class ComputeReplay:
    def __init__(self, durations: dict[Key, tuple[float, float]], source: str) -> None:
        self.durations = durations
        self.source = source
        self._seen: Counter[tuple[int, int, str]] = Counter()

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> ComputeReplay:
        path = Path(run_dir) / "events.csv"
        if not path.is_file():
            raise ReplayError(f"{path}: file not found (--replay-compute needs a previous run directory)")
        events = pd.read_csv(path)
        missing = {"round", "client", "kind", "status", "detail", "host_s", "device_s"} - set(events.columns)
        if missing:
            raise ReplayError(f"{path}: missing columns {sorted(missing)}")
        durations: dict[Key, tuple[float, float]] = {}
        seen: Counter[tuple[int, int, str]] = Counter()
        for row in events.itertuples(index=False):
            label = cls._label(row.kind, row.status, row.detail)
            if label is None:
                continue
            base = (int(row.round), int(row.client), label)
            durations[(*base, seen[base])] = (float(row.host_s), float(row.device_s))
            seen[base] += 1
        return cls(durations, str(path.resolve()))  # summary.json records it: a resume from elsewhere finds it

    @staticmethod
    def _label(kind: str, status: str, detail: object) -> str | None:
        if kind == "aggregate":
            return "aggregate"
        if kind == "server_compute":
            return f"server:{detail}"
        if kind != "compute":
            return None
        return "failed" if status == "failed" else str(detail)

    def lookup(self, rnd: int, client: int, label: str, host_s: float, device_s: float) -> tuple[float, float]:
        """The recorded (host_s, device_s) of this span, or the measured ones if none was recorded."""
        base = (rnd, client, label)
        key = (*base, self._seen[base])
        self._seen[base] += 1
        return self.durations.get(key, (host_s, device_s))
