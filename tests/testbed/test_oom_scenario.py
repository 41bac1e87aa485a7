"""scenarios/oom.yaml: one client's RAM budget is below what its work needs. Its worker is
OOM-killed by the cgroup limit, recorded with outcome oom and its peak memory, and every round
completes on the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from testbed.config.fleet import expand_fleet
from testbed.config.scenario import ScenarioError, load_scenario
from testbed.host.cgroups import detect

OOM = Path(__file__).resolve().parents[2] / "scenarios" / "oom.yaml"


def test_a_fleet_entry_can_override_its_memory_budget() -> None:
    clients = expand_fleet(load_scenario(OOM))
    assert [c.memory_budget_mb for c in clients] == [6144.0, 3072.0, 400.0]  # the pi's and nano's own budgets
    # the entry's override beats the scenario-wide one, which beats the device's budget
    clients = expand_fleet(load_scenario(OOM, ["emulation.memory_limit_mb=2000"]))
    assert [c.memory_budget_mb for c in clients] == [2000.0, 2000.0, 400.0]


@pytest.mark.parametrize("value", [0, -5, "lots"])
def test_a_bad_entry_memory_limit_is_refused_with_its_field(value) -> None:
    with pytest.raises(ScenarioError, match=r"oom.yaml: fleet\.2\.memory_limit_mb: "):
        load_scenario(OOM, [f"fleet.2.memory_limit_mb={value}"])


@pytest.mark.skipif(not detect().memory_writable,
                    reason=f"cgroup memory limits cannot be enforced here: {detect().reason}")
def test_the_client_over_its_budget_is_oom_killed_and_rounds_complete_without_it(assets, tmp_path) -> None:
    out = tmp_path / "oom"
    proc = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "run", str(OOM), "--out", str(out)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failures 1  (pixel-7: oom)" in proc.stdout + proc.stderr  # the progress lines name it
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["backend"]["cgroups_enforced"] is True

    cr = pd.read_csv(out / "client_rounds.csv")
    killed = cr[cr.outcome == "oom"]
    assert set(killed.client) == {2} and set(killed.device) == {"pixel-7"}  # exactly the intended client
    assert (killed.cause == "oom").all()
    assert (killed.peak_rss_mb > 0).all() and (killed.memory_budget_mb == 400).all()
    assert killed.over_memory_budget.all()
    others = cr[cr.client != 2]
    assert (others.outcome == "ok").all()
    assert (others.peak_rss_mb > 400).all()  # what the work needs: above the killed client's budget

    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    trained = rounds.loc[rounds.index > 0]
    assert len(trained) == 2 and trained.accuracy.notna().all()
    for rnd, row in trained.iterrows():
        selected = [int(c) for c in str(row.selected).split()]
        assert 2 in selected
        assert row.participants == len(selected) - 1 and row.failures == 1
