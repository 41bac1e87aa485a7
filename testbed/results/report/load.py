"""Find and read the folders `testbed report` renders: one run folder, or a compare folder
(``comparison.csv`` and one run folder per framework, ``<framework>/`` or
``<framework>/seed<N>/``), or a stress folder (``stress.csv``, one row per grid point, and a run
folder per point, ``<key=value,...>/``). A run table is read from ``<name>.parquet`` when the run wrote one
beside ``<name>.csv`` (same columns; large fleets), else from the CSV."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.results.recorder import CLIENT_ROUND_COLUMNS, EVENT_COLUMNS
from testbed.results.runfolder import run_status

RUN_TABLES = ("events.csv", "rounds.csv")
EVENT_NEEDS = [*EVENT_COLUMNS[:7], "status"]  # round .. sim_end_s, status
ROUND_NEEDS = ["round", "sim_start_s", "sim_end_s", "straggler"]  # and the task's metrics where recorded
CLIENT_ROUND_NEEDS = ["round", "client", "outcome", "cause", "sim_end_s"]


class ReportError(Exception):
    """Bad input: the message reads ``<path>: <what is missing or expected>``."""


@dataclass
class RunData:
    """One run folder's tables, summary and resolved scenario."""

    path: Path
    events: pd.DataFrame
    rounds: pd.DataFrame
    client_rounds: pd.DataFrame
    summary: dict[str, Any]
    scenario_yaml: str


@dataclass
class CompareData:
    """A compare folder: its comparison table (if any), each framework's runs, one per seed
    (the first is the one whose timeline is drawn), and the run folders that could not be read
    (folder relative to the compare folder -> why), e.g. a framework that crashed at start-up."""

    path: Path
    comparison: pd.DataFrame | None
    runs: dict[str, list[RunData]]
    unreadable: dict[str, str]


@dataclass
class StressData(CompareData):
    """A stress folder: stress.csv (one row per grid point), the swept keys (its leading
    columns) and, as in a compare folder, each point's run folder by folder name."""

    stress: pd.DataFrame
    swept: list[str]


def _read_csv(path: Path, needs: list[str]) -> pd.DataFrame:
    """Read a CSV (or, for a ``.parquet`` path, a Parquet file) that must have the columns
    ``needs``; an empty table is fine."""
    if path.suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ReportError(f"{path}: not a readable Parquet file ({exc})") from None
    else:
        try:
            df = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise ReportError(f"{path}: empty file, expected a header with {', '.join(needs)}") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ReportError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in needs if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing columns {', '.join(missing)}")
    return df


def table_path(folder: Path, csv_name: str) -> Path:
    """Where a run table is read from: ``<name>.parquet`` when it exists (much faster to
    read for large fleets), else ``<name>.csv`` (which may not exist either)."""
    parquet = folder / (Path(csv_name).stem + ".parquet")
    return parquet if parquet.is_file() else folder / csv_name


def _has_table(folder: Path, csv_name: str) -> bool:
    return table_path(folder, csv_name).is_file()


def _read_summary(path: Path) -> dict[str, Any]:
    """summary.json, or {} when absent (a run that crashed before writing it)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def load_run(path: Path) -> RunData:
    """Read a run folder; events.csv and rounds.csv (or their .parquet) are required, the
    rest optional."""
    missing = [name for name in RUN_TABLES if not _has_table(path, name)]
    if missing:
        raise ReportError(f"{path}: not a run folder, missing {', '.join(missing)}")
    cr_path = table_path(path, "client_rounds.csv")
    client_rounds = (_read_csv(cr_path, CLIENT_ROUND_NEEDS) if cr_path.is_file()
                     else pd.DataFrame(columns=CLIENT_ROUND_COLUMNS))
    scenario_path = path / "scenario.yaml"
    summary = _read_summary(path / "summary.json")
    if summary.get("status") == "running":  # left so by a process that no longer exists: interrupted
        summary["status"] = run_status(path, summary)
    return RunData(
        path=path,
        events=_read_csv(table_path(path, "events.csv"), EVENT_NEEDS),
        rounds=_read_csv(table_path(path, "rounds.csv"), ROUND_NEEDS).sort_values("round", ignore_index=True),
        client_rounds=client_rounds,
        summary=summary,
        scenario_yaml=scenario_path.read_text() if scenario_path.is_file() else "",
    )


def _is_run_dir(path: Path) -> bool:
    """A folder that looks like a run: has either of the run tables (CSV or Parquet)."""
    return any(_has_table(path, name) for name in RUN_TABLES)


def _seed_dirs(path: Path) -> list[Path]:
    """``seed<N>`` run folders under a framework folder, by N."""
    seeds = [(int(m.group(1)), d) for d in path.iterdir()
             if d.is_dir() and (m := re.fullmatch(r"seed(\d+)", d.name)) and _is_run_dir(d)]
    return [d for _, d in sorted(seeds)]


def _framework_run_dirs(path: Path) -> dict[str, list[Path]]:
    """Framework name -> its run folders (the folder itself, or its seed folders)."""
    found: dict[str, list[Path]] = {}
    for sub in sorted(d for d in path.iterdir() if d.is_dir()):
        dirs = [sub] if _is_run_dir(sub) else _seed_dirs(sub)
        if dirs:
            found[sub.name] = dirs
    return found


def _load_compare(path: Path, run_dirs: dict[str, list[Path]], read_comparison: bool = True) -> CompareData:
    """Read a compare folder; frameworks follow comparison.csv's order when it exists. Run
    folders that cannot be read are listed, not fatal, unless none can be read."""
    comparison = None
    order = list(run_dirs)
    if read_comparison and (path / "comparison.csv").is_file():
        comparison = _read_csv(path / "comparison.csv", ["framework"])
        listed = list(dict.fromkeys(str(f) for f in comparison["framework"]))
        order = listed + [f for f in run_dirs if f not in listed]
    runs: dict[str, list[RunData]] = {}
    unreadable: dict[str, str] = {}
    for name in order:
        if name not in run_dirs:
            unreadable[name] = f"{path / name}: missing run folder (events.csv, rounds.csv) for framework {name}"
        for folder in run_dirs.get(name, []):
            try:
                run = load_run(folder)
            except ReportError as exc:
                unreadable[str(folder.relative_to(path))] = str(exc)
                continue
            runs.setdefault(name, []).append(run)
    if not runs:
        raise ReportError(next(iter(unreadable.values()), f"{path}: compare folder without run folders "
                                                           "(<framework>/rounds.csv)"))
    return CompareData(path=path, comparison=comparison, runs=runs, unreadable=unreadable)


def swept_keys(stress: pd.DataFrame) -> list[str]:
    """stress.csv's swept keys: its columns before the first metric or bookkeeping column."""
    from testbed.results.compare import TABLE_METRICS, TARGET_COLUMNS

    known = {*TABLE_METRICS, *TARGET_COLUMNS, "status", "error", "run_dir"}
    keys = []
    for column in stress.columns:
        if column in known:
            break
        keys.append(str(column))
    return keys


def _load_stress(path: Path, run_dirs: dict[str, list[Path]]) -> StressData:
    """Read a stress folder: stress.csv and the run folder of each point (in stress.csv's
    order, from its run_dir column); stress.csv alone renders its grid."""
    table = _read_csv(path / "stress.csv", [])
    if table.empty or not len(table.columns):
        raise ReportError(f"{path / 'stress.csv'}: no grid points (expected a header and a row per point)")
    swept = swept_keys(table)
    if not swept:
        raise ReportError(f"{path / 'stress.csv'}: no swept key columns before the metrics")
    order = [Path(str(d)).name for d in table["run_dir"].dropna()] if "run_dir" in table else []
    dirs = {name: run_dirs[name] for name in [*order, *run_dirs] if name in run_dirs}
    try:
        data = _load_compare(path, dirs, read_comparison=False) if dirs else CompareData(path, None, {}, {})
    except ReportError as exc:  # no point's run folder is readable: the grid still renders
        data = CompareData(path, None, {}, {"": str(exc)})
    return StressData(path=path, comparison=None, runs=data.runs, unreadable=data.unreadable, stress=table,
                      swept=swept)


def load_source(path: Path) -> RunData | CompareData:
    """A run folder (has events.csv or rounds.csv), a stress folder (has stress.csv) or a
    compare folder (has comparison.csv or subfolders holding runs); anything else is a
    ReportError."""
    if not path.is_dir():
        raise ReportError(f"{path}: not a folder (expected a run folder or a compare folder)")
    if _is_run_dir(path):
        return load_run(path)
    run_dirs = _framework_run_dirs(path)
    if (path / "stress.csv").is_file():
        return _load_stress(path, run_dirs)
    if run_dirs or (path / "comparison.csv").is_file():
        return _load_compare(path, run_dirs)
    raise ReportError(f"{path}: neither a run folder (events.csv, rounds.csv) nor a compare folder "
                      "(comparison.csv, <framework>/rounds.csv)")
