"""Checkpoint and resume: a run killed with SIGKILL in round 2 of 4 and resumed ends with the
tables of a run never interrupted, for FedLLM, KD, Split and FedBuff, and under a deadline
with over-selection and under availability with dropouts.

Each case replays the compute durations of its golden run (tests/golden, GoldenReplay), so
the uninterrupted run is deterministic; the killed run and its resumption run as separate
processes (SIGKILL leaves no handler to run), the reference in this one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from tests.golden.cases import GOLDEN, ROOT, SMOKE, TABLES, GoldenReplay
from tests.golden.compare import assert_tables_equal

FP32 = ("framework.precision=fp32", "framework.rounds=4")
CASES = {
    "fedllm": ("fedllm", ()),
    "kd": ("kd", ("framework.name=kd",)),
    # LoRA dropout draws from each process's RNG: the workers' and the server's come back too
    "fedllm_dropout": ("fedllm", ("framework.lora.dropout=0.1",)),
    "split": ("split_v2", ("framework.name=split", "framework.split.variant=v2")),
    "fedbuff": ("fedbuff", ("policy.kind=fedbuff", "policy.buffer_size=2", "policy.concurrency=3")),
    # stragglers past the deadline still on the network when the next round starts
    "deadline": ("deadline", ("policy.kind=deadline", "policy.over_selection=0.5")),
    # offline windows and dropouts: link outages and seeded draws across the round boundary
    "availability": ("availability", ("availability.kind=fedscale", f"availability.path={GOLDEN / 'avail.json'}",
                                      "availability.dropout=0.5")),
    # a generative task: generations.jsonl loses the killed round's lines and gets them again
    "instruction": ("fedllm", ("task.kind=instruction", "dataset.name=bbc-headlines", "eval.generate.samples=3",
                               "eval.generate.max_new_tokens=4")),
}
DRIVER = """
import sys
from pathlib import Path
from unittest import mock
from tests.golden.cases import GoldenReplay
from testbed.config.scenario import load_scenario
from testbed.sim.session import run_scenario
scenario, out, replay, resume, *overrides = sys.argv[1:]
with mock.patch("testbed.sim.session.ComputeReplay", GoldenReplay):
    summary = run_scenario(load_scenario(scenario, overrides), Path(out), replay_dir=replay, quiet=True,
                           resume=resume == "resume")
print(summary["status"])
"""


def _run_process(out: Path, replay: Path, overrides: tuple[str, ...], *, resume: bool,
                 kill_round: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TESTBED_FAULT_SIGKILL_ROUND", None)
    if kill_round is not None:
        env["TESTBED_FAULT_SIGKILL_ROUND"] = str(kill_round)
    cmd = [sys.executable, "-c", DRIVER, str(SMOKE), str(out), str(replay), "resume" if resume else "new",
           *FP32, *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _reference(out: Path, replay: Path, overrides: tuple[str, ...]) -> None:
    from testbed.config.scenario import load_scenario
    from testbed.sim.session import run_scenario

    with mock.patch("testbed.sim.session.ComputeReplay", GoldenReplay):
        summary = run_scenario(load_scenario(SMOKE, [*FP32, *overrides]), out, replay_dir=str(replay), quiet=True)
    assert summary["status"] == "completed"


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_in_round_2_and_resumed_equals_uninterrupted(case: str, tmp_path: Path) -> None:
    golden, overrides = CASES[case]
    replay = GOLDEN / golden
    killed = _run_process(tmp_path / "run", replay, overrides, resume=False, kill_round=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "running"  # what the killed process left: the report reads it as interrupted
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["round"] == 1

    resumed = _run_process(tmp_path / "run", replay, overrides, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == "completed"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["status"], summary["resumed_after_round"]) == ("completed", 1)

    _reference(tmp_path / "reference", replay, overrides)
    for table in TABLES:
        assert_tables_equal(pd.read_csv(tmp_path / "reference" / table), pd.read_csv(tmp_path / "run" / table), table)
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2, 3, 4]
    if (tmp_path / "reference" / "generations.jsonl").exists():
        generated = pd.read_json(tmp_path / "run" / "generations.jsonl", lines=True)
        pd.testing.assert_frame_equal(generated, pd.read_json(tmp_path / "reference" / "generations.jsonl", lines=True))
        assert generated.groupby("round").size().to_dict() == {r: 3 for r in range(5)}
    # the final adapter, also as a PEFT folder
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
