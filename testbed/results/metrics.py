"""The task's metrics in rounds.csv: which way is better, how they are named, which one judges a
run (its headline metric), and the targets that ``compare`` and ``stress`` time.

- classification: ``accuracy`` (share of held-out labels predicted, higher is better); kd adds
  ``student_accuracy`` (the students', higher is better; ``student_perplexity`` for generative tasks).
- instruction / language_modeling: ``perplexity`` (exp of ``eval_loss``, the mean negative
  log-likelihood per scored token: the response's, or every token in language modelling; lower
  is better) and, when generation is on, ``rouge_l`` and ``exact_match`` (in [0, 1], higher is
  better). ``accuracy`` is empty (NaN).
- every kind: ``eval_loss`` (lower is better).

The headline metric is ``accuracy`` for classification runs and ``perplexity`` for generative
ones. A run's kind is summary.json's ``task`` where recorded, else generative when its
rounds.csv has a ``perplexity`` column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

CLASSIFICATION = "classification"
CLASSIFICATION_METRIC = "accuracy"  # the headline metric of classification runs
GENERATIVE_METRIC = "perplexity"  # ... and of generative (instruction, language_modeling) runs
GENERATIVE_CURVES = ("perplexity", "rouge_l", "exact_match")  # what a generative run's rounds.csv may hold
# A generative run's row of a comparison: the last row's values and round 0's (NaN where absent).
GENERATIVE_FINALS = {"final_perplexity": "perplexity", "final_rouge_l": "rouge_l", "final_exact_match": "exact_match"}
GENERATIVE_INITIALS = {"initial_perplexity": "perplexity", "initial_rouge_l": "rouge_l"}
GENERATIVE_METRICS = (*GENERATIVE_FINALS, *GENERATIVE_INITIALS)
HIGHER_TARGET_FRACTION = 0.9  # default target: 0.9 x the best final value (higher is better)
LOWER_TARGET_FACTOR = 1.1  # default target: 1.1 x the best (lowest) final value (lower is better)


class MetricError(ValueError):
    """A target naming an unknown metric or a value it cannot take; the message names the option."""


@dataclass(frozen=True)
class Metric:
    """One rounds.csv column: its display name, which way is better and the values it can take."""

    name: str
    display: str
    higher_is_better: bool
    low: float  # the values a target may take: [low, high]
    high: float

    def reached(self, values: pd.Series, target: float) -> pd.Series:
        """Which values reach the target (>= it, or <= it when lower is better); NaN never does."""
        return values >= target if self.higher_is_better else values <= target

    def default_target(self, finals: Iterable[float]) -> float:
        """0.9 x the highest final value, or 1.1 x the lowest when lower is better; NaN without
        a finite one. Always reached by the run(s) with the best final value."""
        finite = [float(v) for v in finals if pd.notna(v) and math.isfinite(v)]
        if not finite:
            return math.nan
        return HIGHER_TARGET_FRACTION * max(finite) if self.higher_is_better else LOWER_TARGET_FACTOR * min(finite)

    @property
    def comparison(self) -> str:
        return ">=" if self.higher_is_better else "<="


TASK_METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "accuracy", True, 0.0, 1.0),
    Metric("perplexity", "perplexity", False, 1.0, math.inf),
    Metric("rouge_l", "ROUGE-L", True, 0.0, 1.0),
    Metric("exact_match", "exact match", True, 0.0, 1.0),
    Metric("eval_loss", "eval loss", False, 0.0, math.inf),
    Metric("student_accuracy", "student accuracy", True, 0.0, 1.0),
    Metric("student_perplexity", "student perplexity", False, 1.0, math.inf),
)}
STUDENT_CURVES = {"accuracy": "student_accuracy", "perplexity": "student_perplexity"}  # kd's students, dashed


@dataclass(frozen=True)
class Target:
    """time_to_target_s's goal: the first round whose ``metric`` reaches ``value``."""

    metric: str
    value: float

    def describe(self) -> str:
        """E.g. ``perplexity <= 22``."""
        return f"{self.metric} {TASK_METRICS[self.metric].comparison} {self.value:g}"


def checked_target(metric: str, value: float, option: str) -> Target:
    """A Target once ``metric`` is known and ``value`` in its range; else MetricError naming ``option``."""
    known = TASK_METRICS.get(metric)
    if known is None:
        raise MetricError(f"{option}: unknown metric '{metric}'; one of {', '.join(TASK_METRICS)}")
    if not math.isfinite(value) or not known.low <= value <= known.high:
        span = f"at least {known.low:g}" if known.high == math.inf else f"between {known.low:g} and {known.high:g}"
        raise MetricError(f"{option}: {metric} must be a number {span}")
    return Target(metric, float(value))


def parse_target(text: str, option: str = "--target") -> Target:
    """``METRIC=VALUE`` (e.g. ``perplexity=20``, ``rouge_l=0.3``) -> a checked Target."""
    metric, sep, value_text = text.partition("=")
    if not sep or not metric.strip():
        raise MetricError(f"{option} {text}: expected METRIC=VALUE, e.g. perplexity=20 or accuracy=0.8")
    try:
        value = float(value_text)
    except ValueError:
        raise MetricError(f"{option} {text}: '{value_text.strip()}' is not a number") from None
    return checked_target(metric.strip(), value, f"{option} {text}")


# -- a run's rounds table ------------------------------------------------------------------------
def task_metrics(rounds: pd.DataFrame) -> tuple[str, ...]:
    """The known metrics the rounds table holds, each with at least one finite value."""
    return tuple(name for name in TASK_METRICS
                 if name in rounds and bool(pd.to_numeric(rounds[name], errors="coerce").map(math.isfinite).any()))


def is_generative(rounds: pd.DataFrame | None, summary: Mapping[str, Any] | None = None) -> bool:
    """summary.json's ``task`` (the task kind) where recorded, else: rounds.csv has ``perplexity``."""
    kind = (summary or {}).get("task")
    if isinstance(kind, str):
        return kind != CLASSIFICATION
    return rounds is not None and "perplexity" in rounds


def headline_metric(rounds: pd.DataFrame | None, summary: Mapping[str, Any] | None = None) -> str:
    """``perplexity`` for a generative run, else ``accuracy``."""
    return GENERATIVE_METRIC if is_generative(rounds, summary) else CLASSIFICATION_METRIC


def read_rounds(run_dir: Path) -> pd.DataFrame | None:
    """The run folder's rounds.csv, or None when it is missing or unreadable."""
    try:
        return pd.read_csv(Path(run_dir) / "rounds.csv")
    except (OSError, ValueError):
        return None


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run folder's summary.json, or {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_headline_metric(run_dir: Path) -> str:
    """The headline metric of a run folder (one that crashed included)."""
    return headline_metric(read_rounds(run_dir), read_summary(run_dir))


def final_value(rounds: pd.DataFrame, metric: str) -> float:
    """The metric in the last row of the rounds table (NaN without the column or rows)."""
    return float(rounds[metric].iloc[-1]) if metric in rounds and len(rounds) else math.nan


def initial_value(rounds: pd.DataFrame, metric: str) -> float:
    """The metric in round 0's row, the model before training (NaN without it)."""
    if metric not in rounds or "round" not in rounds:
        return math.nan
    before = rounds.loc[rounds["round"] == 0, metric]
    return float(before.iloc[0]) if len(before) else math.nan


def time_to_target_s(rounds: pd.DataFrame, target: float, metric: str = CLASSIFICATION_METRIC) -> float:
    """Simulated seconds (``sim_end_s``) of the first row whose metric reaches the target (>=,
    or <= when lower is better), round 0 included; NaN if none (or without the column)."""
    if metric not in rounds:
        return math.nan
    reached = rounds[TASK_METRICS[metric].reached(rounds[metric], target)]
    return float(reached["sim_end_s"].iloc[0]) if len(reached) else math.nan


def generative_values(rounds: pd.DataFrame) -> dict[str, float]:
    """final_perplexity, final_rouge_l, final_exact_match (last row), initial_perplexity,
    initial_rouge_l (round 0); NaN where the table lacks them."""
    return {**{key: final_value(rounds, col) for key, col in GENERATIVE_FINALS.items()},
            **{key: initial_value(rounds, col) for key, col in GENERATIVE_INITIALS.items()}}
