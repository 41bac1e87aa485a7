"""The run directory's tables, written as the run goes so a crash loses at most one round.

Three grains, all CSV (pandas.read_csv): ``events.csv`` one row per exchange or compute
span, ``client_rounds.csv`` one row per selected client per round, ``rounds.csv`` one row
per round (round 0 = the model before training). ``host_timeline.csv`` adds where the host's
own wall clock went: one row per interval of model compute (a client's span, an
aggregation, a server step, an evaluation), in Unix seconds, so time outside model compute
can be measured.

Every table grows by appending each flush's new rows (a fleet run writes hundreds of thousands);
only a new column (a key a framework first reports late) rewrites one whole. ``rounds.csv`` is
written anew from the checkpoint's rows when a run resumes. A table of more than
``PARQUET_MIN_ROWS`` rows is also written as ``<name>.parquet`` when the run ends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.results.csvtext import INTEGER_COLUMNS, csv_exact, csv_lines, csv_rows

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
_EVENT_KEYS = frozenset(EVENT_COLUMNS)
HOST_TIMELINE_COLUMNS = ["round", "who", "kind", "t0_unix", "t1_unix", "host_s"]
# client_rounds.csv `outcome`: ok | failed | oom | discarded. A client killed for exceeding its
# memory limit reads `oom` (cause `oom` too); every other failure reads `failed` with its cause.
FAILED_OUTCOMES = ("failed", "oom")
_FAILURE_FIELDS = ("round", "device", "outcome", "cause")  # what failed_client_rounds reads of a row


def failure_outcome(cause: str) -> str:
    """The outcome column of a failed client-round."""
    return "oom" if cause == "oom" else "failed"


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


APPENDED = {"events.csv": EVENT_COLUMNS, "client_rounds.csv": CLIENT_ROUND_COLUMNS,
            "host_timeline.csv": HOST_TIMELINE_COLUMNS}  # the tables that grow by appending
PARQUET_MIN_ROWS = 100_000  # a table this long is also written as parquet at the end of the run


@dataclass(frozen=True)
class TableMark:
    """How far a table file was written: its size, rows and header (what a checkpoint keeps)."""

    bytes: int
    rows: int
    columns: tuple[str, ...]


class AppendedTable:
    """One CSV table that grows by appending the rows of each flush."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.fixed = columns
        self.pending: list[dict[str, Any] | tuple[Any, ...]] = []
        self.tuples = 0  # of the pending rows, those given as tuples (add_values)
        self.columns: list[str] = []  # the header on disk ([] before the first write)
        self.rows = 0  # rows on disk

    def flush(self) -> list[dict[str, Any]]:
        """Write the pending rows; returns them. A row is a dict, or a tuple of the table's own
        columns in order (`RunRecorder.event_values`: a fleet round makes tens of thousands)."""
        rows, self.pending = self.pending, []
        tuples, self.tuples = self.tuples, 0
        if not rows and self.columns:
            return rows
        if not self.columns and (tuples == len(rows) or set(self.fixed).issuperset(
                chain.from_iterable(r for r in rows if r.__class__ is not tuple))):  # a new file, no extra key
            self.path.with_suffix(".parquet").unlink(missing_ok=True)  # a finished run's copy, stale now
            _atomic_write_text(self.path, ",".join(self.fixed) + "\n")  # its header; the rows appended below
            self.columns = list(self.fixed)
        if tuples:
            if tuples == len(rows) and self.columns == self.fixed:  # the common case: appended as they are
                with open(self.path, "a", newline="") as f:
                    f.write(csv_lines(rows, self.fixed, range(len(self.fixed))))
                self.rows += len(rows)
                return rows
            rows = [dict(zip(self.fixed, r)) if r.__class__ is tuple else r for r in rows]
        text = csv_exact(rows, self.columns) if self.columns else None
        if text is None and self.columns and set(self.columns).issuperset(chain.from_iterable(rows)):
            text = csv_rows(rows, self.columns)
        if text is not None:  # the common case: appended
            with open(self.path, "a", newline="") as f:
                f.write(text)
            self.rows += len(rows)
            return rows
        frame = _table(rows, list(self.columns or self.fixed))
        if not self.columns:
            self.path.with_suffix(".parquet").unlink(missing_ok=True)  # a finished run's copy, stale now
            _atomic_write_text(self.path, frame.to_csv(index=False))
        elif list(frame.columns) != self.columns:  # a new column: the file is rewritten with it
            old = pd.read_csv(self.path, keep_default_na=False, na_values=[""], dtype=str)
            _atomic_write_text(self.path, pd.concat([old, frame.astype(object)]).to_csv(index=False))
        self.columns = list(frame.columns)
        self.rows += len(rows)
        return rows

    def add_values(self, values: tuple[Any, ...]) -> None:
        """A row given as its values, in the order of the table's own columns."""
        self.pending.append(values)
        self.tuples += 1

    def drop_pending(self) -> None:
        """Forget the rows not written yet."""
        self.pending, self.tuples = [], 0

    def mark(self) -> TableMark:
        size = self.path.stat().st_size if self.path.exists() else 0
        return TableMark(size, self.rows, tuple(self.columns))

    def cut_to(self, mark: TableMark) -> None:
        """Back to what `mark` saw (a resumed run's checkpoint): rows written after it go."""
        self.drop_pending()
        self.columns, self.rows = list(mark.columns), mark.rows
        self.path.with_suffix(".parquet").unlink(missing_ok=True)  # written again when the run ends
        if not mark.columns:
            self.path.unlink(missing_ok=True)
            return
        with open(self.path, "rb") as f:
            header = f.readline().decode().rstrip("\r\n")
        if header == ",".join(mark.columns) and self.path.stat().st_size >= mark.bytes:
            os.truncate(self.path, mark.bytes)
            return
        frame = pd.read_csv(self.path, keep_default_na=False, na_values=[""], dtype=str, nrows=mark.rows)
        _atomic_write_text(self.path, frame.reindex(columns=list(mark.columns)).to_csv(index=False))

    def to_parquet(self) -> Path | None:
        """`<name>.parquet` beside the CSV when the table is long; its path, or None."""
        if self.rows < PARQUET_MIN_ROWS:
            return None
        from testbed.results.parquet_copy import csv_to_parquet

        target = self.path.with_suffix(".parquet")
        csv_to_parquet(self.path, target, self.fixed, INTEGER_COLUMNS)
        return target


class RunRecorder:
    """Collects rows and writes them on flush(): the large tables by appending, rounds.csv whole.
    `muted` (a resumed run replaying its way to its checkpoint): rows are dropped unwritten."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.tables = {name: AppendedTable(self.out_dir / name, cols) for name, cols in APPENDED.items()}
        self._events = self.tables["events.csv"]
        self.rounds: list[dict[str, Any]] = []
        self._rounds_table = AppendedTable(self.out_dir / "rounds.csv", ROUND_COLUMNS)
        self._rounds_written = 0  # of self.rounds, the rows in rounds.csv
        self._client_rounds = self.tables["client_rounds.csv"]
        self._last_client_rows: list[dict[str, Any] | tuple[Any, ...]] = []  # those the latest flush wrote
        self.muted = False
        # rows given as their values in the table's column order, handed to the table at once (a
        # fleet round adds tens of thousands): `event` and `client_round` of tuples
        self.event_values: Callable[[tuple[Any, ...]], None] = self._events.add_values
        self.client_values: Callable[[tuple[Any, ...]], None] = self._client_rounds.add_values

    def event(self, **row: Any) -> None:
        """An events.csv row; one with exactly the table's columns is kept as its values (a
        table of tuples is appended as it is; one dict among them makes every row a dict)."""
        if row.keys() == _EVENT_KEYS:
            self.event_values(tuple(map(row.__getitem__, EVENT_COLUMNS)))
        else:
            self.tables["events.csv"].pending.append(row)

    def client_round(self, **row: Any) -> None:
        """A client_rounds.csv row given by column (FedBuff's, with its own columns)."""
        self._client_rounds.pending.append(row)

    def failed_client_rounds(self) -> list[tuple[int, str, str]]:
        """(round, device, cause) of each failed row among the client rows the latest flush wrote."""
        outcome_at = CLIENT_ROUND_COLUMNS.index("outcome")
        by_index = itemgetter(*map(CLIENT_ROUND_COLUMNS.index, _FAILURE_FIELDS))
        failed = [r for r in self._last_client_rows
                  if (r[outcome_at] if r.__class__ is tuple else r.get("outcome")) in FAILED_OUTCOMES]
        picked = (by_index(r) if r.__class__ is tuple else tuple(map(r.get, _FAILURE_FIELDS)) for r in failed)
        return [(rnd, device, cause) for rnd, device, _, cause in picked]

    def round(self, **row: Any) -> None:
        self.rounds.append(row)

    def host_interval(self, rnd: int, who: str, kind: str, t1_unix: float, host_s: float) -> None:
        """An interval of model compute on the host that ended at `t1_unix` and lasted `host_s`."""
        self.tables["host_timeline.csv"].pending.append(dict(round=rnd, who=who, kind=kind, t0_unix=t1_unix - host_s,
                                                            t1_unix=t1_unix, host_s=host_s))

    def flush(self) -> None:
        if self.muted:
            for table in self.tables.values():
                table.drop_pending()
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, table in self.tables.items():
            written = table.flush()
            if name == "client_rounds.csv":
                self._last_client_rows = written
        self._rounds_table.pending = self.rounds[self._rounds_written:]
        self._rounds_table.flush()
        self._rounds_written = len(self.rounds)

    def marks(self) -> dict[str, TableMark]:
        """How far each appended table was written (after a flush)."""
        return {name: table.mark() for name, table in self.tables.items()}

    def restore(self, rounds: list[dict[str, Any]], marks: dict[str, TableMark]) -> None:
        """Back to a checkpoint: its rounds rows, and each table cut to its mark; unmuted."""
        self.muted = False
        self.rounds[:] = rounds
        for name, table in self.tables.items():
            table.cut_to(marks.get(name, TableMark(0, 0, ())))
        self._rounds_table.cut_to(TableMark(0, 0, ()))  # written anew from the checkpoint's rows
        self._rounds_written = 0
        self.flush()

    def finish(self) -> list[Path]:
        """The end of the run: long tables also as parquet; their paths."""
        return [p for table in self.tables.values() if (p := table.to_parquet()) is not None]

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        write_json_atomic(self.out_dir / name, data)


LONG_LIST = 100  # a top-level list of more items is written on one line, encoded once
_encoded: dict[int, tuple[Any, int, str]] = {}  # id(list) -> (the list, its length, its JSON)


def _compact(value: list) -> str:
    """A long list's JSON, encoded once (a fleet's clients are written with every round's summary)."""
    held = _encoded.get(id(value))
    if held is None or held[0] is not value or held[1] != len(value):
        held = _encoded[id(value)] = (value, len(value), json.dumps(value, default=str))
    return held[2]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """`data` as indented JSON at `path`, replaced in one step (never half-written); top-level
    lists of more than LONG_LIST items on one line each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    long = {k: v for k, v in data.items() if isinstance(v, list) and len(v) > LONG_LIST}
    text = json.dumps({k: v for k, v in data.items() if k not in long}, indent=2, default=str)
    if long:
        tail = "".join(f",\n  {json.dumps(k)}: {_compact(v)}" for k, v in long.items())
        text = (text[:-2] + tail + "\n}") if text != "{}" else "{" + tail[1:] + "\n}"
    _atomic_write_text(path, text + "\n")
