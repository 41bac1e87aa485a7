"""`testbed run` as a user runs it: a subprocess, interrupted by SIGTERM mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"


def test_sigterm_keeps_finished_rounds_and_cleans_up(assets, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.cli", "run", str(SMOKE), "--out", str(out), "--quiet",
         "--set", "framework.rounds=50"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until round 1 is on disk
        rounds = out / "rounds.csv"
        if rounds.exists() and (pd.read_csv(rounds)["round"] >= 1).any():
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.5)
    workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert workers  # the process backend's client workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    rounds = pd.read_csv(out / "rounds.csv")
    assert 1 <= rounds["round"].max() < 50  # finished rounds are kept
    # workers stop with the run; the forkserver they came from notices its parent's exit in ~1-2 s
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(workers):
        time.sleep(0.2)
    assert not _alive(workers)


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_the_console_command_exits_with_its_code_after_writing_everything(assets, tmp_path):
    """`testbed` (console_main) ends without the interpreter's teardown: the code and files must survive it."""
    out = tmp_path / "run"
    command = [sys.executable, "-c", "from testbed.cli.main import console_main; console_main()"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*command, "run", str(SMOKE), "--out", str(out), "--quiet", "--set", "framework.rounds=1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert len((out / "rounds.csv").read_text().splitlines()) == 3  # header, round 0, round 1
    bad = subprocess.run([*command, "validate", str(tmp_path / "missing.yaml")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "file not found" in bad.stderr


def test_the_runners_imports_run_without_the_collector_and_end_frozen():
    import gc

    from testbed.cli.main import _collector_paused

    before = gc.get_freeze_count()
    try:
        with _collector_paused():
            assert not gc.isenabled()
            kept = [[i] for i in range(1000)]  # tracked objects made while paused
        assert gc.isenabled() and gc.get_freeze_count() >= before + len(kept)
        gc.disable()
        with _collector_paused():
            pass
        assert not gc.isenabled()  # a collector that was off stays off
    finally:
        gc.enable()
        gc.unfreeze()  # pytest's process lives on: let its objects be collected again


def test_ctrl_c_then_resume_finishes_the_run(assets, tmp_path):
    """SIGINT after round 1's checkpoint: interrupted (exit 130), then `--resume` finishes it."""
    out = tmp_path / "run"
    # rounds 2-6 take seconds even on a loaded host, long enough for the signal to land in them
    run = [sys.executable, "-m", "testbed.cli", "run", str(SMOKE), "--quiet", "--set", "framework.rounds=6"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # SIGINT at its default in the run: a suite started in the background of a non-interactive shell
    # ignores SIGINT, and an ignored disposition is inherited (Python then installs no handler)
    proc = subprocess.Popen([*run, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out / "checkpoint" / "state.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    assert (code, summary["status"]) == (130, "interrupted"), summary.get("status")
    busy = subprocess.run([*run, "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert busy.returncode == 2 and "pass --resume" in " ".join(busy.stderr.split())
    done = subprocess.run([*run, "--resume", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_after_round"] >= 1
    assert list(pd.read_csv(out / "rounds.csv")["round"]) == [0, 1, 2, 3, 4, 5, 6]


def _columns(rows) -> dict[str, list[str]]:
    """final_table's columns: header -> cells."""
    from testbed.sim.session import final_table

    return {str(c.header): [str(cell) for cell in c.cells] for c in final_table(rows).columns}


def test_round_lines_and_the_table_show_the_tasks_metric():
    from testbed.sim.session import _round_line

    base = {"round": 2, "train_loss": 1.25, "sim_end_s": 31.04, "participants": 2, "failures": 0, "eval_loss": 2.9,
            "bytes_up": 2_000_000}
    classification = {**base, "accuracy": 0.625}
    assert _round_line(classification) == ("round 2: acc 0.625 train loss 1.250  sim 31.0 s  participants 2  "
                                           "failures 0")
    assert _round_line({**base, "accuracy": None}).startswith("round 2: acc - train loss")
    generative = {**base, "accuracy": None, "perplexity": 18.174, "rouge_l": 0.4129, "exact_match": 0.25}
    assert _round_line(generative) == ("round 2: ppl 18.17  rouge-L 0.413 train loss 1.250  sim 31.0 s  "
                                       "participants 2  failures 0")
    no_generation = {**generative, "rouge_l": None, "exact_match": None}
    assert _round_line(no_generation).startswith("round 2: ppl 18.17 train loss")
    assert _round_line({**generative, "perplexity": float("nan")}).startswith("round 2: ppl -  rouge-L 0.413")

    assert _columns([classification]) == {
        "round": ["2"], "sim end s": ["31.0"], "participants": ["2"], "failures": ["0"], "train loss": ["1.250"],
        "eval loss": ["2.900"], "accuracy": ["0.625"], "up MB": ["2.00"]}
    columns = _columns([{**generative, "round": 0, "perplexity": 200.0, "rouge_l": None}, generative])
    assert list(columns)[-4:] == ["perplexity", "rouge-L", "exact match", "up MB"] and "accuracy" not in columns
    assert columns["perplexity"] == ["200.00", "18.17"] and columns["rouge-L"] == ["-", "0.413"]
    assert columns["exact match"] == ["0.250", "0.250"]
    assert list(_columns([no_generation]))[-2:] == ["perplexity", "up MB"]
