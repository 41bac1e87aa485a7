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

import pandas as pd
import pytest

from tests.golden.cases import CASES, TABLES, Case, run_case
from tests.golden.compare import assert_tables_equal


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
