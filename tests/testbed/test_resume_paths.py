"""A run resumes from another directory, its folder moved: the scenario's relative paths lead
to the same files from anywhere (its folder's), `--out` and `--resume` are the current
directory's, and the run folder's own location is not part of what must match."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.golden.cases import ROOT
from tests.testbed.scenario_folder import scenario_in, write_inputs

SETS = ("--set", "framework.rounds=3", "--set", "framework.precision=fp32", "--set", "availability.kind=always")


def _testbed(cwd: Path, *args: str, kill_round: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TESTBED_FAULT_SIGKILL_ROUND", None)
    if kill_round is not None:
        env["TESTBED_FAULT_SIGKILL_ROUND"] = str(kill_round)
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.usefixtures("assets")
def test_a_run_killed_here_resumes_from_elsewhere_in_its_moved_folder(tmp_path: Path) -> None:
    project, first, second = tmp_path / "project", tmp_path / "first", tmp_path / "second"
    write_inputs(project)
    scenario = scenario_in(project)
    first.mkdir()
    second.mkdir()
    killed = _testbed(first, "run", "../project/scenario.yaml", "--out", "run", "--quiet", *SETS, kill_round=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    recorded = yaml.safe_load((first / "run" / "scenario.yaml").read_text())
    assert recorded["dataset"]["path"] == str(project / "data" / "news.csv")  # absolute: readable from anywhere
    assert recorded["fleet"][0]["link"]["trace_up"] == str(project / "traces" / "cell.up")
    assert json.loads((first / "run" / "checkpoint" / "state.json").read_text())["round"] == 1

    shutil.move(first / "run", tmp_path / "moved")
    resumed = _testbed(second, "run", str(Path("..") / "project" / scenario.name), "--resume", "../moved",
                       "--quiet", *SETS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "moved" / "summary.json").read_text())
    assert (summary["status"], summary["resumed_after_round"]) == ("completed", 1)
    assert list(pd.read_csv(tmp_path / "moved" / "rounds.csv")["round"]) == [0, 1, 2, 3]
    assert not (first / "run").exists() and not (second / "runs").exists()  # nothing written where it was asked from


@pytest.mark.usefixtures("assets")
def test_resume_still_refuses_another_data_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_inputs(project)
    scenario_in(project)
    killed = _testbed(project, "run", "scenario.yaml", "--out", "run", "--quiet", *SETS, kill_round=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    shutil.copy(project / "data" / "news.csv", project / "data" / "other.csv")
    refused = _testbed(project, "run", "scenario.yaml", "--resume", "run", "--quiet", *SETS,
                       "--set", "dataset.path=data/other.csv")
    assert refused.returncode == 2
    assert f"these fields differ: dataset.path ('{project / 'data' / 'news.csv'}' -> " \
           f"'{project / 'data' / 'other.csv'}')" in refused.stderr
