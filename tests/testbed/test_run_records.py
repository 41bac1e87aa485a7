"""Truthful run records: the folder's lock, reuse only when asked, `status` on every exit path,
--resume of a completed run, a scenario other than the folder's, and the final PEFT folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
import yaml

from testbed.cli.main import main
from testbed.config.scenario import load_scenario
from testbed.results.runfolder import RunFolderError, claim, run_status
from testbed.sim import session

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.yaml"


def _finished_folder(path: Path, rounds: int = 2, status: str = "completed") -> Path:
    """A folder as a completed run of smoke.yaml with `rounds` rounds leaves it."""
    path.mkdir(parents=True)
    scenario = load_scenario(SMOKE, [f"framework.rounds={rounds}"])
    (path / "scenario.yaml").write_text(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
    (path / "summary.json").write_text(json.dumps({"status": status, "pid": 1, "host": socket.gethostname()}))
    pd.DataFrame([{"round": r, "sim_start_s": 0.0, "sim_end_s": float(r), "participants": 2, "failures": 0,
                   "accuracy": 0.25 * r} for r in range(rounds + 1)]).to_csv(path / "rounds.csv", index=False)
    return path


def test_a_second_run_on_a_held_folder_exits_2_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    with claim(out):
        code = main(["run", str(SMOKE), "--out", str(out), "--quiet"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"in use by another run (pid {os.getpid()} on {socket.gethostname()})" in err
    assert not (out / "summary.json").exists()  # the refused run wrote nothing


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path, capsys):
    out = _finished_folder(tmp_path / "run")
    assert main(["run", str(SMOKE), "--out", str(out), "--set", "framework.rounds=2", "--quiet"]) == 2
    assert "holds a run (status completed); pass --resume" in " ".join(capsys.readouterr().err.split())
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"  # untouched


def test_resume_of_a_completed_run_prints_its_table_and_exits_0(tmp_path, capsys):
    out = _finished_folder(tmp_path / "run")
    assert main(["run", str(SMOKE), "--set", "framework.rounds=2", "--resume", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # as one line, whatever the console's width
    assert "completed: nothing to resume" in err
    assert "0.500" in err  # round 2's accuracy, from rounds.csv


def test_resume_with_another_scenario_exits_2_naming_the_fields(tmp_path, capsys):
    out = _finished_folder(tmp_path / "run", status="running")
    code = main(["run", str(SMOKE), "--set", "framework.rounds=4", "--set", "seed=7", "--resume", str(out)])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--resume needs the same scenario" in err
    assert "framework.rounds (2 -> 4)" in err and "seed (" in err


def test_resume_and_out_must_agree(tmp_path, capsys):
    out = _finished_folder(tmp_path / "run")
    assert main(["run", str(SMOKE), "--out", str(tmp_path / "other"), "--resume", str(out)]) == 2
    assert "a resumed run goes on in its own folder" in " ".join(capsys.readouterr().err.split())


def test_overwrite_starts_the_folder_over(tmp_path):
    out = _finished_folder(tmp_path / "run")
    (out / "stale.txt").write_text("from before")
    with claim(out, overwrite=True):
        assert sorted(p.name for p in out.iterdir()) == [".lock", ".owner.json"]
    with pytest.raises(RunFolderError, match="holds a run"):
        with claim(_finished_folder(tmp_path / "again")):
            pass


def test_running_status_of_a_dead_process_reads_interrupted(tmp_path):
    out = _finished_folder(tmp_path / "run", status="running")
    dead = {"status": "running", "pid": 2**22 + 12345, "host": socket.gethostname()}
    assert run_status(out, dead) == "interrupted"
    alive = {"status": "running", "pid": os.getpid(), "host": socket.gethostname()}
    assert run_status(out, alive) == "running"
    elsewhere = {"status": "running", "pid": 2**22 + 12345, "host": "another-host"}
    assert run_status(out, elsewhere) == "running"  # another host's process cannot be checked: its word


def test_a_failure_while_the_model_is_resolved_is_recorded(tmp_path, monkeypatch):
    import testbed.ml.assets as assets

    def broken(name):
        raise RuntimeError("the asset cache is on a disk that went away")

    monkeypatch.setattr(assets, "resolve_model", broken)
    with pytest.raises(RuntimeError):
        session.run_scenario(load_scenario(SMOKE), tmp_path / "run", quiet=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "crashed"
    assert summary["error"] == "RuntimeError: the asset cache is on a disk that went away"
    assert summary["pid"] == os.getpid() and summary["host"] == socket.gethostname()
    assert any("resolve_model" in line or "broken" in line for line in summary["error_tail"])


def test_a_diverged_global_model_ends_the_run_failed_exit_1(tmp_path, monkeypatch, capsys):
    import testbed.ml.assets as assets
    import testbed.sim.runner as runner_module
    from testbed.protocol import ModelDiverged

    class DivergingRunner:
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            raise ModelDiverged(3, "base_model.model.lm_head.lora_A.weight")

        def close(self):
            self.closed = True

    monkeypatch.setattr(assets, "resolve_model", lambda name: str(tmp_path))
    monkeypatch.setattr(runner_module, "Runner", DivergingRunner)
    code = main(["run", str(SMOKE), "--out", str(tmp_path / "run"), "--set", "emulation.backend=inproc"])
    assert code == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "round 3" in summary["error"] and "lora_A" in summary["error"]


def test_the_report_reads_a_dead_runs_folder_as_interrupted(tmp_path):
    from testbed.results.report.load import load_run
    from testbed.results.recorder import RunRecorder

    out = tmp_path / "run"
    recorder = RunRecorder(out)
    recorder.round(round=0, sim_start_s=0.0, sim_end_s=0.0, sim_duration_s=0.0, selected="", participants=0,
                   failures=0)
    recorder.flush()
    (out / "summary.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 12345,
                                                  "host": socket.gethostname()}))
    assert load_run(out).summary["status"] == "interrupted"
