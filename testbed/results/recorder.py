"""The run directory's tables, rewritten after every round so a crash loses at most one.

Three grains, all CSV (pandas.read_csv): ``events.csv`` one row per exchange or compute
span, ``client_rounds.csv`` one row per selected client per round, ``rounds.csv`` one row
per round (round 0 = the model before training). ``host_timeline.csv`` adds where the host's
own wall clock went: one row per interval of model compute (a client's span, an
aggregation, a server step, an evaluation), in Unix seconds, so time outside model compute
can be measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

EVENT_COLUMNS = [
    "round", "client", "kind", "payload_bytes", "wire_bytes", "sim_start_s", "sim_end_s",
    "host_s", "device_s", "status", "detail",
]
CLIENT_ROUND_COLUMNS = [
    "round", "client", "device", "link", "outcome", "cause", "n_samples", "train_loss",
    "host_compute_s", "device_compute_s", "dilation_factor", "bound", "peak_rss_mb",
    "memory_budget_mb", "over_memory_budget", "bytes_down", "bytes_up", "sim_start_s", "sim_end_s",
    "energy_j", "compute_energy_j", "radio_energy_j", "energy_note", "host",
]
ROUND_COLUMNS = [
    "round", "sim_start_s", "sim_end_s", "sim_duration_s", "selected", "participants", "failures", "discarded",
    "straggler", "train_loss", "eval_loss", "accuracy", "bytes_up", "bytes_down", "wire_bytes_up",
    "wire_bytes_down", "wasted_compute_s", "server_compute_s", "host_round_s", "host_fit_s", "host_eval_s",
]
HOST_TIMELINE_COLUMNS = ["round", "who", "kind", "t0_unix", "t1_unix", "host_s"]
# client_rounds.csv `outcome`: ok | failed | oom | discarded. A client killed for exceeding its
# memory limit reads `oom` (cause `oom` too); every other failure reads `failed` with its cause.
FAILED_OUTCOMES = ("failed", "oom")


def failure_outcome(cause: str) -> str:
    """The outcome column of a failed client-round."""
    return "oom" if cause == "oom" else "failed"


INTEGER_COLUMNS = {
    "round", "client", "payload_bytes", "wire_bytes", "n_samples", "bytes_down", "bytes_up", "participants",
    "failures", "discarded", "straggler", "wire_bytes_up", "wire_bytes_down", "start_version", "staleness",
}


def _table(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Rows -> DataFrame with nullable integers where a column counts things (NA, not 2.0).
    The fixed columns come first; keys a framework adds (e.g. student_accuracy) follow in
    the order they first appear."""
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in columns))
    df = pd.DataFrame(rows, columns=columns + extra)
    for col in INTEGER_COLUMNS.intersection(columns):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunRecorder:
    """Collects rows in memory and rewrites the tables atomically on flush()."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.events: list[dict[str, Any]] = []
        self.client_rounds: list[dict[str, Any]] = []
        self.rounds: list[dict[str, Any]] = []
        self.host_timeline: list[dict[str, Any]] = []

    def event(self, **row: Any) -> None:
        self.events.append(row)

    def client_round(self, **row: Any) -> None:
        self.client_rounds.append(row)

    def round(self, **row: Any) -> None:
        self.rounds.append(row)

    def host_interval(self, rnd: int, who: str, kind: str, t1_unix: float, host_s: float) -> None:
        """An interval of model compute on the host that ended at `t1_unix` and lasted `host_s`."""
        self.host_timeline.append(dict(round=rnd, who=who, kind=kind, t0_unix=t1_unix - host_s,
                                       t1_unix=t1_unix, host_s=host_s))

    def flush(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, rows, cols in (
            ("events.csv", self.events, EVENT_COLUMNS),
            ("client_rounds.csv", self.client_rounds, CLIENT_ROUND_COLUMNS),
            ("rounds.csv", self.rounds, ROUND_COLUMNS),
            ("host_timeline.csv", self.host_timeline, HOST_TIMELINE_COLUMNS),
        ):
            _atomic_write_text(self.out_dir / name, _table(rows, cols).to_csv(index=False))

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        write_json_atomic(self.out_dir / name, data)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """`data` as indented JSON at `path`, replaced in one step (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
