"""`testbed compare`: the frameworks side by side on the same fleet, data and seed.

Each framework (and seed) runs into its own run folder (``DIR/<framework>/``, or
``DIR/<framework>/seed<N>/`` with several seeds); the metrics below are then read back from
its tables and written to ``DIR/comparison.csv`` (one row per framework) and
``DIR/comparison.md`` (the same, rounded, for a human). ``DIR/comparison_runs.csv`` keeps
one row per run (framework x seed). :func:`run_metrics` is the one place a run folder
becomes a row; ``testbed stress`` uses it too.

Metrics of one run (``rounds.csv`` has one row per round, round 0 = before training;
``client_rounds.csv`` one row per selected client per round):

- ``final_accuracy``: ``accuracy`` of the last row of rounds.csv (NaN for generative tasks).
- ``final_perplexity`` / ``final_rouge_l`` / ``final_exact_match`` (generative tasks, i.e.
  ``task.kind`` instruction or language_modeling, only): ``perplexity`` / ``rouge_l`` /
  ``exact_match`` of the last row of rounds.csv; NaN where the run has no such column (no
  generation: no ROUGE-L, no exact match).
- ``initial_perplexity`` / ``initial_rouge_l`` (generative tasks only): the same in round 0's
  row (the model before training); NaN without round 0.
- ``time_to_target_s``: ``sim_end_s`` (simulated seconds) of the first row of rounds.csv,
  round 0 included, whose target metric reaches the target value: >= it for a metric where
  higher is better (accuracy, rouge_l, exact_match, student_accuracy), <= it where lower is
  better (perplexity, eval_loss, student_perplexity); NaN when never reached. The target is ``--target
  METRIC=VALUE`` (``--target-accuracy X`` means ``--target accuracy=X``); by default the
  task's headline metric (testbed.results.metrics: accuracy, perplexity for generative tasks)
  at 0.9 x the best final value (perplexity: 1.1 x the lowest final value) among the runs
  compared with the same seed (``testbed stress``: among all grid points), so that it is
  always reachable by at least one of them. The target used is in the ``target_metric`` and
  ``target_value`` columns; ``target_accuracy`` repeats the value when the metric is accuracy
  (else NaN).
- ``sim_wall_clock_s``: ``sim_end_s`` of the last row of rounds.csv.
- ``bytes_up_per_client_round`` / ``bytes_down_per_client_round``: mean ``bytes_up`` /
  ``bytes_down`` (payload bytes) over the client-rounds whose outcome is ok.
- ``client_compute_s_per_round``: mean ``device_compute_s`` (simulated device seconds) over
  the client-rounds whose outcome is ok.
- ``client_peak_mem_mb``: max ``peak_rss_mb`` over all client-rounds (failed ones included).
- ``server_compute_s``: simulated seconds of server work: events.csv ``device_s`` of the
  ``aggregate`` and ``server_compute`` events (split's backbone steps, KD's ingest), i.e.
  rounds.csv ``server_compute_s`` plus the work the server did for clients inside rounds.
- ``failures``: number of client-rounds whose outcome is not ok.
- extras: ``student_accuracy`` (kd: the students' accuracy in the last round, else NaN),
  ``client_model_mb`` (the client model's size in the last round that reports it),
  ``host_s`` (host wall-clock of the whole run, summary.json ``host_wall_s``).

A run that does not complete (an exception) gets NaN metrics, ``status`` ``crashed`` and the
exception in ``error`` (its traceback in ``<run folder>/error.txt``); the other runs go on.

With several seeds, comparison.csv has ``<metric>_mean`` and ``<metric>_ci95`` (half-width of
the 95% Student-t confidence interval of the mean, ``t(0.975, n-1) x s / sqrt(n)``) over the
seeds whose run completed and whose value is finite, ``n_seeds`` (completed runs),
``targets_reached`` (runs that reached their target) and ``target_metric``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.config.registry import framework_names
from testbed.config.scenario import Scenario, load_scenario
from testbed.ml.preflight import check_scenario
from testbed.results.metrics import (
    GENERATIVE_METRICS,
    TASK_METRICS,
    MetricError,
    Target,
    checked_target,
    final_value,
    generative_values,
    is_generative,
    parse_target,
    read_rounds,
    run_headline_metric,
    time_to_target_s,
)

DEFAULT_FRAMEWORKS = ("fedllm", "kd", "split")
METRICS = (
    "final_accuracy", "time_to_target_s", "sim_wall_clock_s", "bytes_up_per_client_round",
    "bytes_down_per_client_round", "client_compute_s_per_round", "client_peak_mem_mb", "server_compute_s",
    "failures",
)
EXTRA_METRICS = ("student_accuracy", "client_model_mb", "host_s")
ALL_METRICS = METRICS + EXTRA_METRICS  # every run's; generative runs add GENERATIVE_METRICS
TABLE_METRICS = ALL_METRICS[:1] + GENERATIVE_METRICS + ALL_METRICS[1:]  # the order of the tables' columns
TARGET_COLUMNS = ("target_accuracy", "target_metric", "target_value")
COMPLETED = "completed"

# Markdown headers (with units) and the factor from the CSV unit to the displayed one.
_MARKDOWN_COLUMNS: dict[str, tuple[str, float]] = {
    "final_accuracy": ("final accuracy", 1.0),
    "final_perplexity": ("final perplexity", 1.0),
    "final_rouge_l": ("final ROUGE-L", 1.0),
    "final_exact_match": ("final exact match", 1.0),
    "initial_perplexity": ("initial perplexity", 1.0),
    "initial_rouge_l": ("initial ROUGE-L", 1.0),
    "time_to_target_s": ("time to target (s)", 1.0),
    "sim_wall_clock_s": ("sim wall-clock (s)", 1.0),
    "bytes_up_per_client_round": ("up / client-round (kB)", 1e-3),
    "bytes_down_per_client_round": ("down / client-round (kB)", 1e-3),
    "client_compute_s_per_round": ("client compute / round (s)", 1.0),
    "client_peak_mem_mb": ("client peak mem (MB)", 1.0),
    "server_compute_s": ("server compute (s)", 1.0),
    "failures": ("failed client-rounds", 1.0),
    "student_accuracy": ("student accuracy", 1.0),
    "client_model_mb": ("client model (MB)", 1.0),
    "host_s": ("host (s)", 1.0),
}

_COUNT_HEADERS = {"n_seeds": "seeds completed", "targets_reached": "seeds reaching target"}


class CompareError(ValueError):
    """Bad input to `compare` or `stress` (reported as ``error: ...``, exit 2)."""


@dataclass(frozen=True)
class PlannedRun:
    """One validated scenario and the folder it runs into; ``labels`` name it in the tables."""

    labels: Mapping[str, Any]
    scenario: Scenario
    run_dir: Path


@dataclass(frozen=True)
class RunOutcome:
    """How a planned run ended: ``status`` from summary.json, or ``crashed`` with the error."""

    labels: Mapping[str, Any]
    run_dir: Path
    status: str
    error: str = ""

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


# -- input ---------------------------------------------------------------------------------------
def parse_frameworks(text: str) -> tuple[str, ...]:
    """``fedllm,kd,split`` -> the names, each a registered framework, no repeats."""
    names = tuple(part.strip() for part in text.split(","))
    known = framework_names()
    for name in names:
        if name not in known:
            raise CompareError(f"--frameworks {text}: unknown framework '{name}'; supported: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise CompareError(f"--frameworks {text}: a framework is named twice")
    return names


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``0,1,2`` -> distinct non-negative integer seeds; None (not given) stays None."""
    if text is None:
        return None
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CompareError(f"--seeds {text}: expected comma-separated integers, e.g. 0,1,2") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise CompareError(f"--seeds {text}: seeds must be distinct non-negative integers")
    return seeds


def check_target(target_accuracy: float | None = None, target: str | None = None) -> Target | None:
    """The explicit target: ``--target METRIC=VALUE``, or ``--target-accuracy X`` (an accuracy in
    [0, 1], the same as ``--target accuracy=X``); None (neither given) for the default."""
    if target is not None and target_accuracy is not None:
        raise CompareError(f"--target {target} and --target-accuracy {target_accuracy}: give one of them "
                           "(--target-accuracy X means --target accuracy=X)")
    if target_accuracy is not None and not 0.0 <= target_accuracy <= 1.0:
        raise CompareError(f"--target-accuracy {target_accuracy}: must be between 0 and 1")
    try:
        if target is not None:
            return parse_target(target)
        if target_accuracy is not None:
            return checked_target("accuracy", target_accuracy, f"--target-accuracy {target_accuracy}")
    except MetricError as exc:
        raise CompareError(str(exc)) from None
    return None


def plan_compare(scenario_path: str | Path, frameworks: Sequence[str], seeds: Sequence[int] | None,
                 overrides: Sequence[str], out_dir: Path) -> list[PlannedRun]:
    """Every framework x seed, validated before anything runs (a ScenarioError is bad input)."""
    plan = []
    for fw in frameworks:
        for seed in seeds or (None,):
            extra = [f"framework.name={fw}"] + ([f"seed={seed}"] if seed is not None else [])
            scenario = load_scenario(scenario_path, list(overrides) + extra)
            check_scenario(scenario, str(scenario_path))  # what `testbed run` checks before starting
            run_dir = out_dir / fw / f"seed{seed}" if seeds and len(seeds) > 1 else out_dir / fw
            plan.append(PlannedRun({"framework": fw, "seed": scenario.seed}, scenario, run_dir))
    return plan


def label_text(labels: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items())


# -- one run folder -> one row -------------------------------------------------------------------
def _last(series: pd.Series) -> float:
    """The last non-missing value of a column, NaN if there is none."""
    values = series.dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def server_compute_s(run_dir: Path) -> float:
    """Device seconds of the server's `aggregate` and `server_compute` events."""
    events = pd.read_csv(run_dir / "events.csv", usecols=["kind", "device_s"])
    return float(events.loc[events["kind"].isin(("aggregate", "server_compute")), "device_s"].sum())


def run_metrics(run_dir: Path, target: Target) -> dict[str, float]:
    """The metrics of one completed run folder (see the module docstring for definitions);
    a generative run's add GENERATIVE_METRICS."""
    rounds = pd.read_csv(run_dir / "rounds.csv")
    clients = pd.read_csv(run_dir / "client_rounds.csv")
    ok = clients[clients["outcome"] == "ok"]
    summary = json.loads((run_dir / "summary.json").read_text())
    nan_column = pd.Series(dtype=float)
    return {
        "final_accuracy": final_value(rounds, "accuracy"),
        **(generative_values(rounds) if is_generative(rounds, summary) else {}),
        "time_to_target_s": time_to_target_s(rounds, target.value, target.metric),
        "sim_wall_clock_s": float(rounds["sim_end_s"].iloc[-1]),
        "bytes_up_per_client_round": float(ok["bytes_up"].mean()),
        "bytes_down_per_client_round": float(ok["bytes_down"].mean()),
        "client_compute_s_per_round": float(ok["device_compute_s"].mean()),
        "client_peak_mem_mb": float(clients["peak_rss_mb"].max()),
        "server_compute_s": server_compute_s(run_dir),
        "failures": float(len(clients) - len(ok)),
        "student_accuracy": float(rounds["student_accuracy"].iloc[-1]) if "student_accuracy" in rounds else math.nan,
        "client_model_mb": _last(rounds.get("client_model_mb", nan_column)),
        "host_s": float(summary.get("host_wall_s", math.nan)),
    }


def default_target(outcomes: Iterable[RunOutcome], metric: str) -> Target:
    """The metric at 0.9 x its best final value among the completed runs, 1.1 x the lowest
    where lower is better (NaN when none has one)."""
    finals = [final_value(rounds, metric) for o in outcomes if o.completed
              and (rounds := read_rounds(o.run_dir)) is not None]
    return Target(metric, TASK_METRICS[metric].default_target(finals))


def outcome_row(outcome: RunOutcome, target: Target) -> dict[str, Any]:
    """Labels, metrics (NaN for a run that did not complete), target, status, error, folder."""
    metrics = (run_metrics(outcome.run_dir, target) if outcome.completed
               else dict.fromkeys(ALL_METRICS, math.nan))
    return {**outcome.labels, **metrics, "target_accuracy": target.value if target.metric == "accuracy" else math.nan,
            "target_metric": target.metric, "target_value": target.value, "status": outcome.status,
            "error": outcome.error, "run_dir": str(outcome.run_dir)}


def runs_table(outcomes: Sequence[RunOutcome], target: Target | None, group_by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run. Without an explicit target, each run gets its headline metric's default
    target over its group (the runs with the same values of the ``group_by`` labels)."""
    rows = []
    for outcome in outcomes:
        group = [o for o in outcomes if all(o.labels[k] == outcome.labels[k] for k in group_by)]
        rows.append(outcome_row(outcome, target or default_target(group, run_headline_metric(outcome.run_dir))))
    table = pd.DataFrame(rows)
    table["failures"] = table["failures"].astype("Int64")
    labels = list(dict.fromkeys(k for o in outcomes for k in o.labels))
    return table[labels + [m for m in TABLE_METRICS if m in table] + [*TARGET_COLUMNS, "status", "error", "run_dir"]]


# -- several seeds -------------------------------------------------------------------------------
def student_t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with a positive integer ``df``, in closed form
    (Abramowitz & Stegun 26.7.3 for odd, 26.7.4 for even df), with theta = atan(t / sqrt(df)):
    odd: 2/pi (theta + sin theta (cos theta + 2/3 cos^3 theta + ... + (2.4...(df-3))/(1.3...(df-2)) cos^(df-2) theta)),
    even: sin theta (1 + 1/2 cos^2 theta + ... + (1.3...(df-3))/(2.4...(df-2)) cos^(df-2) theta)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    total = 0.0
    if df % 2 == 1:
        term = math.cos(theta)
        for k in range(1, (df + 1) // 2):
            total += term
            term *= (2 * k) / (2 * k + 1) * cos2
        return 2.0 / math.pi * (theta + math.sin(theta) * total)
    term = 1.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= (2 * k - 1) / (2 * k) * cos2
    return math.sin(theta) * total


def student_t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p (0.5 <= p < 1), by bisection on the closed-form distribution."""
    mass = 2.0 * p - 1.0
    lo, hi = 0.0, 1.0
    while student_t_two_sided_mass(hi, df) < mass:
        lo, hi = hi, 2.0 * hi
    for _ in range(100):  # halves [lo, hi] below double precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if student_t_two_sided_mass(mid, df) < mass else (lo, mid)
    return 0.5 * (lo + hi)


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% Student-t half-width over the finite values (NaN where undefined)."""
    finite = [float(v) for v in values if pd.notna(v) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = statistics.fmean(finite)
    if len(finite) < 2:
        return mean, math.nan
    return mean, student_t_quantile(0.975, len(finite) - 1) * statistics.stdev(finite) / math.sqrt(len(finite))


def seeds_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per framework from the per-run rows: ``<metric>_mean``, ``<metric>_ci95`` over
    its completed seeds, ``n_seeds``, ``targets_reached``, ``target_metric``, status and errors."""
    rows = []
    for fw, group in runs.groupby("framework", sort=False):
        done = group[group["status"] == COMPLETED]
        row: dict[str, Any] = {"framework": fw, "n_seeds": len(done)}
        for metric in (m for m in TABLE_METRICS if m in runs):
            row[f"{metric}_mean"], row[f"{metric}_ci95"] = mean_ci95(done[metric].astype(float))
        row["targets_reached"] = int(done["time_to_target_s"].notna().sum())
        row["target_metric"] = ",".join(dict.fromkeys(str(m) for m in group["target_metric"]))
        row["status"] = COMPLETED if len(done) == len(group) else f"{len(done)}/{len(group)} completed"
        row["error"] = "; ".join(f"seed {r.seed}: {r.error}" for r in group.itertuples() if r.error)
        rows.append(row)
    return pd.DataFrame(rows)


# -- markdown ------------------------------------------------------------------------------------
def format_number(value: float, significant: int = 3) -> str:
    """Whole numbers as they are, others rounded to ``significant`` digits, never in
    scientific notation; NaN -> a dash."""
    if pd.isna(value) or not math.isfinite(value):
        return "–"
    if float(value).is_integer():
        return f"{value:.0f}"
    decimals = max(0, significant - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _cell(row: Mapping[str, Any], metric: str, factor: float) -> str:
    """One metric of one row: the value, or ``mean ± ci95`` in a seeds summary."""
    if metric in row:
        return format_number(math.nan if pd.isna(row[metric]) else row[metric] * factor)
    mean, ci = row[f"{metric}_mean"] * factor, row[f"{metric}_ci95"] * factor
    return format_number(mean) if pd.isna(ci) else f"{format_number(mean)} ± {format_number(ci)}"


def _has_values(table: pd.DataFrame, metric: str) -> bool:
    """Whether some row has a value of the metric (or of its seeds mean)."""
    column = metric if metric in table else f"{metric}_mean"
    return column in table and bool(table[column].notna().any())


def markdown_table(table: pd.DataFrame, label_columns: Sequence[str]) -> str:
    """A Markdown table of the labels, the metrics that have a value somewhere, and status,
    followed by the target where it is not an accuracy and the errors of runs that failed."""
    metrics = [m for m in TABLE_METRICS if _has_values(table, m)]
    counts = [c for c in _COUNT_HEADERS if c in table]
    headers = (list(label_columns) + [_MARKDOWN_COLUMNS[m][0] for m in metrics] + [_COUNT_HEADERS[c] for c in counts]
               + ["status"])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in table.to_dict("records"):
        cells = ([str(row[c]) for c in label_columns] + [_cell(row, m, _MARKDOWN_COLUMNS[m][1]) for m in metrics]
                 + [str(row[c]) for c in counts] + [str(row["status"])])
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {', '.join(str(row[c]) for c in label_columns)}: {row['error']}"
              for row in table.to_dict("records") if row["error"]]
    return "\n".join(lines + _target_note(table) + ([""] + errors if errors else [])) + "\n"


def _target_note(table: pd.DataFrame) -> list[str]:
    """``time to target: the first round with perplexity <= 22.4`` where the target metric is
    not accuracy (tables of accuracy targets stay as they were)."""
    goals = []
    for row in (table.drop_duplicates("target_metric").to_dict("records") if "target_metric" in table else []):
        metric, value = str(row["target_metric"]), row.get("target_value", math.nan)
        if metric in TASK_METRICS and metric != "accuracy":
            goals.append(Target(metric, value).describe() if pd.notna(value)
                         else f"{metric} {TASK_METRICS[metric].comparison} each seed's target (comparison_runs.csv)")
    return ["", f"time to target: the first round with {' / '.join(goals)}"] if goals else []
