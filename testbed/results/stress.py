"""`testbed stress`: one scenario over a grid of overrides, into one tidy table.

Each ``--sweep key=v1,v2,...`` is one axis; several sweeps form their cartesian product. Every
grid point runs into ``DIR/<key=value,...>/`` (characters other than letters, digits and
``._=,+-`` become ``_``) with its overrides applied after the fixed ``--set`` ones, and
``DIR/stress.csv`` gets one row per point: the swept keys as columns (their values, parsed
as YAML scalars like ``--set``), then the metrics of :mod:`testbed.results.compare` (same
definitions, same code; the default target is the task's headline metric at 0.9 x the best
final accuracy, or 1.1 x the lowest final perplexity, over the whole grid), ``target_accuracy``,
``target_metric``, ``target_value``, ``status``, ``error`` and ``run_dir``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testbed.config.scenario import load_scenario
from testbed.ml.preflight import check_scenario
from testbed.results.compare import CompareError, PlannedRun

_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclass(frozen=True)
class Sweep:
    """One axis of the grid: a scenario key and the values (as typed) it takes."""

    key: str
    values: tuple[str, ...]


def parse_sweep(text: str) -> Sweep:
    """``key=v1,v2,...`` -> a Sweep; every value non-empty and distinct."""
    key, sep, values_text = text.partition("=")
    values = tuple(v.strip() for v in values_text.split(","))
    if not sep or not key.strip():
        raise CompareError(f"--sweep {text}: expected key=value1,value2,...")
    if not all(values) or len(set(values)) != len(values):
        raise CompareError(f"--sweep {text}: values must be non-empty and distinct")
    return Sweep(key.strip(), values)


def grid(sweeps: Sequence[Sweep]) -> list[tuple[tuple[str, str], ...]]:
    """The cartesian product of the sweeps: each point a tuple of (key, value text)."""
    keys = [s.key for s in sweeps]
    if len(set(keys)) != len(keys):
        raise CompareError(f"--sweep: a key is swept twice ({', '.join(keys)})")
    return [tuple(zip(keys, values)) for values in itertools.product(*(s.values for s in sweeps))]


def point_dir_name(point: Sequence[tuple[str, str]]) -> str:
    """A grid point's folder name, ``key=value,key2=value2``, made filesystem-safe."""
    return _UNSAFE.sub("_", ",".join(f"{k}={v}" for k, v in point))


def _scalar(text: str) -> Any:
    """A value as ``--set`` reads it (a YAML scalar), for the table."""
    return yaml.safe_load(text)


def plan_stress(scenario_path: str | Path, sweeps: Sequence[Sweep], overrides: Sequence[str],
                out_dir: Path) -> list[PlannedRun]:
    """Every grid point, validated before anything runs (a ScenarioError is bad input)."""
    plan, folders = [], set()
    for point in grid(sweeps):
        name = point_dir_name(point)
        if name in folders:
            raise CompareError(f"--sweep: two grid points map to the same folder name {name}")
        folders.add(name)
        scenario = load_scenario(scenario_path, list(overrides) + [f"{k}={v}" for k, v in point])
        check_scenario(scenario, str(scenario_path))  # what `testbed run` checks before starting
        plan.append(PlannedRun({k: _scalar(v) for k, v in point}, scenario, out_dir / name))
    return plan
