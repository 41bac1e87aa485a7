"""Many scenarios, one run folder each: `testbed compare` (the frameworks side by side) and
`testbed stress` (a grid of overrides). Planning and the tables live in testbed.results
(compare, stress); this module runs the plans and writes the tables."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from testbed.results.compare import (
    DEFAULT_FRAMEWORKS,
    CompareError,
    PlannedRun,
    RunOutcome,
    check_target,
    label_text,
    markdown_table,
    plan_compare,
    runs_table,
    seeds_summary,
)
from testbed.results.runfolder import RunFolderError, holds_run, precheck
from testbed.results.runlog import RunLog
from testbed.results.stress import Sweep, plan_stress
from testbed.sim.session import run_scenario


def run_one(planned: PlannedRun, quiet: bool, *, resume: bool = False, overwrite: bool = False) -> RunOutcome:
    """Run one scenario; an exception is recorded (and its traceback kept), not raised.
    `resume`: a completed run is only reported, an interrupted one goes on."""
    try:  # a folder another run holds is refused before its run.log is touched
        precheck(planned.run_dir, resume=resume, overwrite=overwrite)
    except RunFolderError as exc:
        print(f"{label_text(planned.labels)}: {exc}", file=sys.stderr)
        return RunOutcome(planned.labels, planned.run_dir, "crashed", f"{type(exc).__name__}: {exc}")
    # the run's console in its own run.log, as `testbed run` keeps it (complete under --quiet too);
    # on the terminal it goes to stderr, so that stdout holds the command's own table or JSON
    with RunLog(quiet=quiet, stdout_to_stderr=True) as log:
        log.attach(planned.run_dir, append=resume)
        try:
            summary = run_scenario(planned.scenario, planned.run_dir, resume=resume, overwrite=overwrite)
        except Exception as exc:  # noqa: BLE001 -- one run's failure must not stop the others
            trace = traceback.format_exc()
            (planned.run_dir / "error.txt").write_text(trace)
            log.record(trace)
            log.error(f"{label_text(planned.labels)}: crashed: {exc}")
            return RunOutcome(planned.labels, planned.run_dir, "crashed", f"{type(exc).__name__}: {exc}")
    return RunOutcome(planned.labels, planned.run_dir, str(summary.get("status")))


def run_all(plan: Iterable[PlannedRun], quiet: bool, *, resume: bool = False,
            overwrite: bool = False) -> list[RunOutcome]:
    """The planned runs one after the other (each run uses the host's cores itself). Runs the
    folder already holds are refused (CompareError) unless `resume` or `overwrite`."""
    plan = list(plan)
    held = [str(p.run_dir) for p in plan if holds_run(p.run_dir)]
    if held and not (resume or overwrite):
        raise CompareError(f"{', '.join(held[:4])}{' ...' if len(held) > 4 else ''}: hold runs already; pass "
                           "--resume to skip the completed ones and go on with the rest, or --overwrite")
    outcomes = []
    for planned in plan:
        if not quiet:
            print(f"== {label_text(planned.labels)} -> {planned.run_dir}", file=sys.stderr)
        outcomes.append(run_one(planned, quiet, resume=resume, overwrite=overwrite))
    return outcomes


def compare(scenario_path: str | Path, out_dir: Path, *, frameworks: Sequence[str] = DEFAULT_FRAMEWORKS,
            seeds: Sequence[int] | None = None, overrides: Sequence[str] = (),
            target_accuracy: float | None = None, target: str | None = None, quiet: bool = False,
            resume: bool = False, overwrite: bool = False) -> pd.DataFrame:
    """Run every framework (x seed), write comparison.csv / .md and comparison_runs.csv, and
    return the comparison table. ``target``: ``METRIC=VALUE`` (``target_accuracy`` X: the same
    as ``accuracy=X``; not both). Bad input raises CompareError or ScenarioError before any run."""
    explicit = check_target(target_accuracy, target)
    plan = plan_compare(scenario_path, frameworks, seeds, overrides, out_dir)
    runs = runs_table(run_all(plan, quiet, resume=resume, overwrite=overwrite), explicit, group_by=("seed",))
    table = seeds_summary(runs) if seeds and len(seeds) > 1 else runs.drop(columns="seed")
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "comparison_runs.csv", index=False)
    table.to_csv(out_dir / "comparison.csv", index=False)
    (out_dir / "comparison.md").write_text(markdown_table(table, ["framework"]))
    return table


def stress(scenario_path: str | Path, out_dir: Path, *, sweeps: Sequence[Sweep], overrides: Sequence[str] = (),
           target_accuracy: float | None = None, target: str | None = None, quiet: bool = False,
           resume: bool = False, overwrite: bool = False) -> pd.DataFrame:
    """Run every grid point, write ``stress.csv`` and return it. ``target`` as in compare().
    Bad input raises CompareError or ScenarioError before any run."""
    explicit = check_target(target_accuracy, target)
    if not sweeps:
        raise CompareError("give at least one --sweep key=value1,value2,...")
    plan = plan_stress(scenario_path, sweeps, overrides, out_dir)
    table = runs_table(run_all(plan, quiet, resume=resume, overwrite=overwrite), explicit)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "stress.csv", index=False)
    return table

