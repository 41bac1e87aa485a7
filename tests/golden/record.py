"""Record the golden runs: `python -m tests.golden.record [CASE ...]` (all cases by default).

Each case runs twice: once measured, then again replaying that run's compute durations, and
the replayed run's tables become the golden ones (its events.csv is also the replay source of
the comparison test, so test and golden replay the same durations).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.golden.cases import CASES, TABLES, Case  # noqa: E402


def record(case: Case, work: Path) -> None:
    from testbed.run import run_scenario
    from testbed.scenario import load_scenario

    scenario = load_scenario(case.scenario, case.all_overrides)
    measured = work / f"{case.name}-measured"
    run_scenario(scenario, measured, quiet=True)
    replayed = work / f"{case.name}-replayed"
    summary = run_scenario(scenario, replayed, replay_dir=str(measured), quiet=True)
    assert summary["status"] == "completed", summary
    shutil.rmtree(case.folder, ignore_errors=True)
    case.folder.mkdir(parents=True)
    for table in TABLES:
        shutil.copy(replayed / table, case.folder / table)
    print(f"{case.name}: recorded {', '.join(TABLES)} in {case.folder}")


def main(names: list[str]) -> None:
    chosen = [c for c in CASES if not names or c.name in names]
    unknown = set(names) - {c.name for c in CASES}
    if unknown:
        sys.exit(f"unknown case(s): {sorted(unknown)}; known: {[c.name for c in CASES]}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in chosen:
            record(case, Path(tmp))


if __name__ == "__main__":
    main(sys.argv[1:])
