"""Record the golden runs: `python -m tests.golden.record [CASE ...]` (all cases by default).

Each case runs once measured, then replays the previous run's compute durations (GoldenReplay)
until its tables stop changing: that fixed point becomes the golden tables, and its events.csv
is also the replay source of the comparison test, so test and golden replay the same durations.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from tests.golden.cases import CASES, TABLES, Case, run_case  # noqa: E402
from tests.golden.compare import assert_tables_equal  # noqa: E402

MAX_REPLAYS = 5


def _same_tables(a: Path, b: Path) -> bool:
    try:
        for table in TABLES:
            assert_tables_equal(pd.read_csv(a / table), pd.read_csv(b / table), table)
    except AssertionError:
        return False
    return True


def record(case: Case, work: Path) -> None:
    previous = work / f"{case.name}-0"
    run_case(case, previous, None)
    for i in range(1, MAX_REPLAYS + 1):
        current = work / f"{case.name}-{i}"
        summary = run_case(case, current, previous)
        assert summary["status"] == "completed", summary
        if i > 1 and _same_tables(previous, current):
            break
        previous = current
    else:
        sys.exit(f"{case.name}: the replayed tables still change after {MAX_REPLAYS} replays")
    shutil.rmtree(case.folder, ignore_errors=True)
    case.folder.mkdir(parents=True)
    for table in TABLES:
        shutil.copy(current / table, case.folder / table)
    print(f"{case.name}: recorded {', '.join(TABLES)} in {case.folder} (fixed point after {i} replays)")


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
