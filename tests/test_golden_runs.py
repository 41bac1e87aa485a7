"""Golden runs: today's outputs, cell by cell, against those recorded before the code moved.

Each case (tests/golden/cases.py) re-runs under `precision: fp32`, replaying the compute
durations of its recorded events.csv (GoldenReplay: a span never finished there is not measured
anew), and its rounds, client_rounds and events tables must
equal the recorded ones: the same rows, the same columns, the same values. Facts measured on
the host (`host_*` columns, peak memory) are left out; floats are compared to 1e-9 relative for
simulated quantities, and to 1e-4 for learning metrics (fp32 kernels may round differently on
another CPU).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tests.golden.cases import CASES, HOST_COLUMNS, HOST_COLUMNS_PREFIX, TABLES, Case, run_case

LEARNING = ("loss", "accuracy", "agreement", "kl", "ort_")  # column names holding learned values


def _compared_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if not c.startswith(HOST_COLUMNS_PREFIX) and c not in HOST_COLUMNS]


def _rtol(column: str) -> float:
    return 1e-4 if any(word in column for word in LEARNING) else 1e-9


def _text(column: pd.Series) -> np.ndarray:
    return np.array(["" if pd.isna(v) else str(v) for v in column], dtype=object)


def assert_tables_equal(expected: pd.DataFrame, actual: pd.DataFrame, table: str) -> None:
    assert list(actual.columns) == list(expected.columns), f"{table}: columns differ"
    assert len(actual) == len(expected), f"{table}: {len(actual)} rows, golden {len(expected)}"
    for column in _compared_columns(expected):
        want, got = expected[column], actual[column]
        if pd.api.types.is_numeric_dtype(want) and pd.api.types.is_numeric_dtype(got):
            close = np.isclose(got.to_numpy(float), want.to_numpy(float), rtol=_rtol(column), atol=1e-9,
                               equal_nan=True)
        else:
            close = _text(got) == _text(want)
        bad = np.flatnonzero(~close)
        assert bad.size == 0, (f"{table}: column {column!r} differs in {bad.size} rows, first row {bad[0]}: "
                               f"golden {want.iloc[bad[0]]!r}, now {got.iloc[bad[0]]!r}")


def _docker_problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.images.get("fedge-testbed:latest")
    except Exception as exc:  # no SDK, no engine or no image: say which
        return f"Docker engine or fedge-testbed image unavailable: {exc}"
    return None


def _skip_unless_possible(case: Case) -> None:
    if case.docker and (problem := _docker_problem()) is not None:
        if os.environ.get("TESTBED_REQUIRE_DOCKER") == "1":  # CI set up an engine
            pytest.fail(problem)
        pytest.skip(problem)
    if case.cgroups:
        from testbed.host.cgroups import detect

        if not detect().memory_writable:
            pytest.skip(f"cgroup memory limits cannot be enforced here: {detect().reason}")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.docker] if c.docker else [])
                                  for c in CASES])
def test_golden_run(assets, tmp_path, case: Case):
    _skip_unless_possible(case)
    summary = run_case(case, tmp_path / case.name, case.folder)
    assert summary["status"] == "completed"
    for table in TABLES:
        expected = pd.read_csv(case.folder / table)
        actual = pd.read_csv(tmp_path / case.name / table)
        assert_tables_equal(expected, actual, table)


def test_the_comparison_catches_a_changed_cell_and_ignores_host_facts():
    golden = pd.read_csv(CASES[0].folder / "events.csv")
    host_only = golden.copy()
    host_only["host_s"] = host_only["host_s"] * 2
    assert_tables_equal(golden, host_only, "events.csv")
    moved = golden.copy()
    moved.loc[len(moved) - 1, "sim_end_s"] *= 1 + 1e-6
    with pytest.raises(AssertionError, match="column 'sim_end_s' differs in 1 rows"):
        assert_tables_equal(golden, moved, "events.csv")
    relabelled = golden.copy()
    relabelled.loc[0, "kind"] = "adapter_up" if golden.loc[0, "kind"] != "adapter_up" else "compute"
    with pytest.raises(AssertionError, match="column 'kind' differs"):
        assert_tables_equal(golden, relabelled, "events.csv")
