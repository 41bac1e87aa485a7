"""`testbed run` for people and for scripts: run.log, the table outside a terminal, --json,
--quiet, a crash's traceback; `testbed --version`; `testbed calibrate` stores nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli.main import main

SMOKE = Path(__file__).resolve().parents[3] / "scenarios" / "smoke.yaml"


def _testbed(*args: str) -> subprocess.CompletedProcess:
    """`python -m testbed.cli ...` with stdout and stderr pipes (no terminal) and 80 columns."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def _table_header(text: str) -> str:
    return next(line for line in text.splitlines() if "participants" in line and "up MB" in line)


def test_json_run_log_and_quiet_outside_a_terminal(assets, tmp_path):
    out = tmp_path / "run"
    done = _testbed("run", str(SMOKE), "--out", str(out), "--set", "framework.rounds=1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)  # one document, nothing else on stdout
    assert done.stdout.count("\n") == 1
    assert document["status"] == "completed" and document["rounds_completed"] == 1
    assert document["run_dir"] == str(out) and document["framework"] == "fedllm"
    assert [r["round"] for r in document["rounds"]] == [0, 1]
    assert document["rounds"][1]["participants"] == 2 and document["rounds"][0]["train_loss"] is None
    assert document["final_accuracy"] == document["rounds"][1]["accuracy"]
    # the end-of-run table in full width on a pipe, though COLUMNS is 80
    header = _table_header(done.stderr)
    assert "accuracy" in header and "participants" in header and "…" not in header and len(header) > 80
    log = (out / "run.log").read_text()
    assert log.startswith("# testbed ") and "round 1: acc" in log and _table_header(log) == header
    assert f"run directory: {out}" in log and "\x1b" not in log

    # --quiet: nothing on the console, the log still complete (a resumed run appends to it)
    quiet = _testbed("run", str(SMOKE), "--resume", str(out), "--set", "framework.rounds=1", "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout == "" and quiet.stderr == ""
    first, second = (out / "run.log").read_text().split("# testbed ")[1:]
    assert "round 1: acc" in first and "--quiet" in second.splitlines()[0]
    assert "accuracy" in _table_header(second) and "(completed: nothing to resume)" in second

    # bad input found once the folder is in use: one line on stderr (even --quiet), and in the log
    replay = tmp_path / "no-such-run"
    bad = _testbed("run", str(SMOKE), "--out", str(tmp_path / "bad"), "--replay-compute", str(replay), "--quiet")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1 and "events.csv" in bad.stderr
    assert bad.stderr.strip() in (tmp_path / "bad" / "run.log").read_text()
    assert json.loads((tmp_path / "bad" / "summary.json").read_text())["status"] == "failed"


def test_a_crash_leaves_its_traceback_in_run_log(monkeypatch, tmp_path, capsys):
    from testbed.sim import session

    def crash(scenario, out_dir, **kwargs):
        print("the run began")
        raise RuntimeError("a worker's reply could not be read")

    monkeypatch.setattr(session, "run_scenario", crash)
    out = tmp_path / "run"
    code = main(["run", str(SMOKE), "--out", str(out), "--quiet", "--set", "emulation.backend=inproc"])
    assert code == 1
    shown = capsys.readouterr()
    assert shown.out == ""
    assert shown.err == (f"error: the run crashed: RuntimeError: a worker's reply could not be read "
                         f"(traceback in {out / 'run.log'})\n")
    log = (out / "run.log").read_text()
    assert "the run began" in log and "Traceback (most recent call last):" in log
    assert "RuntimeError: a worker's reply could not be read" in log and log.rstrip().endswith("run.log)")


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0
    assert capsys.readouterr().out == f"testbed {version('fedge-testbed')}\n"


def test_calibrate_prints_and_stores_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    assert main(["calibrate", "--seconds", "0.05"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["threads"] == 1 and measured["gemm_gflops_fp32"] > 0
    assert list(tmp_path.iterdir()) == []


def test_a_missing_extra_during_the_run_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    from testbed.sim import session

    def needs_docker(scenario, out_dir, **kwargs):
        raise ModuleNotFoundError("No module named 'docker'", name="docker")

    monkeypatch.setattr(session, "run_scenario", needs_docker)
    out = tmp_path / "run"
    code = main(["run", str(SMOKE), "--out", str(out), "--set", "emulation.backend=inproc", "--json"])
    assert code == 2
    shown = capsys.readouterr()
    assert shown.out == ""  # no run summary was written: no document
    line = shown.err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "'docker' extra" in line and "Traceback" not in shown.err
    assert line in (out / "run.log").read_text()
