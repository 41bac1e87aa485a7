"""Experiment tracking: a finished run logged to MLflow (``output.tracking: mlflow``).

One MLflow run per run folder, in the experiment named after the scenario (``name``):

- parameters: the scenario as run, flattened to dotted keys (``framework.name``,
  ``fleet.0.device``; a list of plain values as its JSON text);
- metrics: every numeric column of rounds.csv (accuracy, train_loss, bytes_up, ...) per round
  (``step`` = the round) at its simulated time (``timestamp`` = ``sim_end_s`` in ms, so
  MLflow's "relative time" axis is the simulated wall-clock), and the summary's numbers
  (``sim_wall_clock_s``, ``host_wall_s``, ``final_accuracy``, ...) once;
- tags: the run folder, its status, the framework, the git commit;
- artifacts: the run folder's files (not its lock files).

The store is ``output.tracking_uri``: a folder (default ``mlruns`` in the current directory)
holds a SQLite store (``mlflow.db``) and the artifacts (``artifacts/``), written with no
server; an MLflow URI (``sqlite:///...``, ``http://...``) is used as it is. A run that cannot
be tracked (the extra missing, the store unwritable) stays a complete run folder: the reason
is said on the console and recorded in summary.json's ``tracking``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from testbed.config.output import DEFAULT_TRACKING_STORE, OutputConfig
from testbed.config.scenario import Scenario
from testbed.config.extras import require
from testbed.results.recorder import write_json_atomic

MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter's value
_BATCH = 100  # MLflow takes up to 100 parameters (1000 metrics) per call
_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}  # anything else: FAILED


@dataclass(frozen=True)
class TrackingStore:
    uri: str  # the tracking URI MLflow's client is given
    artifacts: str | None  # the artifact root of a new experiment (None: the store's own)


@dataclass(frozen=True)
class TrackedRun:
    uri: str
    experiment_id: str
    run_id: str


def store_of(output: OutputConfig, cwd: Path | None = None) -> TrackingStore:
    """Where `output` tracks: a folder (against `cwd`, default the current directory) holds
    ``mlflow.db`` and ``artifacts/``; a URI (``scheme://...``) is MLflow's."""
    spec = output.tracking_uri or DEFAULT_TRACKING_STORE
    if "://" in spec:
        return TrackingStore(spec, None)
    folder = Path(cwd or Path.cwd()) / Path(spec).expanduser()
    folder = Path(os.path.normpath(folder))
    return TrackingStore(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())


def flat_params(value: Any, prefix: str = "") -> dict[str, str]:
    """A scenario dump as dotted keys -> text: mappings and lists of mappings are walked,
    a list of plain values is its JSON text, None is ``null``."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flat_params(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, (list, tuple)) and any(isinstance(item, (dict, list, tuple)) for item in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flat_params(item, f"{prefix}.{i}"))
        return out
    text = json.dumps(value) if isinstance(value, (list, tuple, bool)) or value is None else str(value)
    return {prefix: text[:MAX_PARAM_CHARS]}


def round_metrics(rounds_csv: Path) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step) of every numeric, finite cell of rounds.csv: the step is
    the round, the timestamp its simulated end (sim_end_s) in milliseconds."""
    out = []
    with rounds_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["round"])
            sim_ms = round((_number(row.get("sim_end_s")) or 0.0) * 1000)
            for key, text in row.items():
                value = _number(text)
                if key != "round" and value is not None:
                    out.append((key, value, sim_ms, step))
    return out


def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def summary_metrics(summary: dict[str, Any], taken: set[str]) -> dict[str, float]:
    """The summary's top-level finite numbers (not booleans, nor a rounds.csv column)."""
    return {key: float(v) for key, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and key not in taken
            and key not in ("pid", "seed")}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and alembic's INFO lines (creating the store's tables) and warnings off the console."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def log_run(scenario: Scenario, out_dir: Path, summary: dict[str, Any], *, cwd: Path | None = None) -> TrackedRun:
    """Log the finished run in `out_dir` to the store of ``scenario.output``; MissingExtra
    without the `tracking` extra, MLflow's or the OS's error where the store refuses."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: nothing leaves this host
    require("mlflow", "output.tracking: mlflow")
    require("sqlalchemy", "output.tracking: mlflow (its SQLite store)")
    store = store_of(scenario.output, cwd)
    with _quiet():
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=store.uri)
        experiment_id = _experiment(client, scenario.name, store.artifacts)
        run = client.create_run(experiment_id, run_name=out_dir.name, tags=_tags(out_dir, summary))
        run_id = run.info.run_id
        try:
            params = [Param(k, v) for k, v in flat_params(scenario.model_dump(mode="json")).items()]
            for i in range(0, len(params), _BATCH):
                client.log_batch(run_id, params=params[i:i + _BATCH])
            rounds_csv = out_dir / "rounds.csv"
            rows = round_metrics(rounds_csv) if rounds_csv.is_file() else []
            last_step = max((step for *_, step in rows), default=0)
            last_ms = max((ms for _, _, ms, _ in rows), default=0)
            metrics = [Metric(k, v, ms, step) for k, v, ms, step in rows]
            metrics += [Metric(k, v, last_ms, last_step)
                        for k, v in summary_metrics(summary, {k for k, *_ in rows}).items()]
            for i in range(0, len(metrics), 10 * _BATCH):
                client.log_batch(run_id, metrics=metrics[i:i + 10 * _BATCH])
            for entry in sorted(out_dir.iterdir()):  # the run's files, not the folder's lock (.lock, .owner.json)
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    client.log_artifacts(run_id, str(entry), artifact_path=entry.name)
                else:
                    client.log_artifact(run_id, str(entry))
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, _STATUS.get(summary.get("status"), "FAILED"))
    return TrackedRun(store.uri, experiment_id, run_id)


def _experiment(client, name: str, artifacts: str | None) -> str:
    """The id of the experiment `name`, created where missing (another process may create it
    at the same moment: then it is read back)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _tags(out_dir: Path, summary: dict[str, Any]) -> dict[str, str]:
    tags = {"testbed.run_dir": str(out_dir.resolve()), "testbed.status": str(summary.get("status")),
            "testbed.framework": str(summary.get("framework")), "testbed.task": str(summary.get("task"))}
    if summary.get("git_commit") not in (None, "unknown"):
        tags["mlflow.source.git.commit"] = str(summary["git_commit"])
    return tags


def track_run(scenario: Scenario, out_dir: Path, summary: dict[str, Any], console) -> dict[str, Any] | None:
    """Where ``output.tracking`` asks for it, log the finished run (log_run) and record the
    outcome in summary.json's ``tracking``; a failure is said on `console` (a rich Console)
    and recorded, never raised: the run folder is complete either way."""
    if scenario.output.tracking is None:
        return None
    try:
        tracked = log_run(scenario, Path(out_dir), summary)
        record: dict[str, Any] = {"kind": scenario.output.tracking, "uri": tracked.uri,
                                  "experiment_id": tracked.experiment_id, "run_id": tracked.run_id}
        console.print(f"tracked: MLflow run {tracked.run_id} in {tracked.uri}")
    except Exception as exc:  # noqa: BLE001  the run is done: nothing of tracking may lose it
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        record = {"kind": scenario.output.tracking, "error": error}
        console.print(f"[yellow]tracking failed[/yellow] ({escape(error)}); the run folder {escape(str(out_dir))} "
                      "is complete")
    summary["tracking"] = record
    with contextlib.suppress(OSError):
        write_json_atomic(Path(out_dir) / "summary.json", summary)
    return record
