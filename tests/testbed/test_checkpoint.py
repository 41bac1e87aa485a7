"""The checkpoint's parts: the ledger (hollowed values, replay answers, divergence caught), the
folder written atomically, a disk that fills mid-run, and the final adapter as a PEFT folder."""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch

from testbed.backends import wire
from testbed.host.calibration import HostCalibration
from testbed.protocol import ComputeSpan, Failure, FitIns, FitRes, FrameworkState, Payload
from testbed.results.recorder import TableMark
from testbed.sim.checkpoint import Checkpoint, RoundsJson, read_checkpoint, write_checkpoint
from testbed.sim.ledger import Ledger, ResumeError, ServerEntry, filled, hollow
from tests.golden.cases import GOLDEN, SMOKE, TABLES, GoldenReplay
from tests.golden.compare import assert_tables_equal


def _fit_res(cid: int, size: int) -> FitRes:
    from testbed.ml.workload import Workload

    span = ComputeSpan("train", 0.25, Workload(flops=1e9, bytes_moved=1e6), t_end_unix=1.0)
    return FitRes(cid, 1, (Payload("adapter_up", bytes(range(256)) * (size // 256)),), n_samples=7,
                  metrics={"train_loss": 1.5}, spans=(span,))


def test_hollow_keeps_everything_but_the_bytes():
    res = _fit_res(3, 4096)
    h = hollow(res)
    assert h.sizes == (4096,) and h.value.payloads[0].data == b""
    back = filled(h)
    assert back.payloads[0].payload_bytes == 4096 and back.spans == res.spans and back.metrics == res.metrics
    assert filled(hollow(b"x" * 10)) == bytes(10)
    failure = Failure(2, 1, "oom", "killed at 512 MB")
    assert hollow(failure) is failure
    # what a checkpoint stores crosses the wire format (registered types only)
    assert wire.decode(wire.encode(h)) == h


def test_ledger_replays_what_it_recorded_and_refuses_another_run():
    live = Ledger()
    ins = {0: FitIns(1, (Payload("adapter_down", b"abc"),), seed=5), 2: FitIns(1, (), seed=6)}
    index, made = live.configure_fit(lambda rnd, ids: ins, 1, [0, 2])
    assert (index, made) == (0, ins)
    key = live.next_key(1, 0, "fit")
    live.record_call(key, _fit_res(0, 512))
    live.record_server(ServerEntry(1, -1, "aggregate", 0.125, {"train_loss": 1.0}))

    replay = Ledger.from_state(wire.decode(wire.encode(live.state())))
    _, again = replay.configure_fit(lambda rnd, ids: pytest.fail("replay must not call the framework"), 1, [0, 2])
    assert again[0].payloads[0].data == bytes(3) and again[0].seed == 5
    assert replay.replay_call(replay.next_key(1, 0, "fit")).result().payloads[0].payload_bytes == 512
    assert replay.replay_server(1, -1, "aggregate").host_s == 0.125
    with pytest.raises(ResumeError, match="not in the ledger"):
        replay.replay_call(replay.next_key(1, 0, "fit")).result()  # a second fit that never happened
    with pytest.raises(ResumeError, match="diverged"):
        Ledger.from_state(live.state()).configure_fit(lambda *a: None, 1, [0, 1])  # other clients chosen


def _checkpoint(rnd: int) -> Checkpoint:
    cal = HostCalibration(threads=1, gemm_gflops_fp32=50.0, gemm_gflops_bf16=None, mem_bandwidth_gbps=10.0,
                          measured_at="2026-12-06T00:00:00+00:00", torch_version="2.13.0", cpu_model="test",
                          seconds_spent=1.0)
    return Checkpoint(
        round=rnd, sim_now_s=12.5 * rnd, calibration=cal, bf16_step_speedup=None, precision="fp32",
        throttled={1: 0.5}, rounds=[{"round": rnd, "accuracy": 0.5, "eval_loss": float("nan")}],
        marks={"events.csv": TableMark(120 * rnd, 3 * rnd, ("round", "client")), "client_rounds.csv": TableMark(0, 0, ())},
        framework=FrameworkState({"global.w": torch.full((2, 3), float(rnd))}, {"note": "x"}),
        clients={0: b"student", 1: b""}, ledger=Ledger(), torch_rng=torch.get_rng_state())


def test_checkpoint_round_trip_and_a_crash_while_writing(tmp_path):
    write_checkpoint(tmp_path, _checkpoint(1))
    write_checkpoint(tmp_path, _checkpoint(2))
    got = read_checkpoint(tmp_path)
    assert (got.round, got.sim_now_s, got.throttled, got.clients) == (2, 25.0, {1: 0.5}, {0: b"student", 1: b""})
    assert torch.equal(got.framework.tensors["global.w"], torch.full((2, 3), 2.0))
    assert got.framework.meta == {"note": "x"} and got.calibration.gemm_gflops_fp32 == 50.0
    assert got.rounds[0]["accuracy"] == 0.5 and math.isnan(got.rounds[0]["eval_loss"])
    assert got.marks == {"events.csv": TableMark(240, 6, ("round", "client")), "client_rounds.csv": TableMark(0, 0, ())}
    # killed between the two renames: the previous checkpoint is still whole, beside a half-written one
    shutil.move(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    (tmp_path / "checkpoint.tmp").mkdir()
    (tmp_path / "checkpoint.tmp" / "state.json").write_text("{")
    assert read_checkpoint(tmp_path).round == 2
    assert read_checkpoint(tmp_path / "nothing-here") is None


def test_rounds_rows_are_encoded_once_across_checkpoints(tmp_path):
    """Each checkpoint holds every rounds row so far; a row is encoded once, at the first
    checkpoint that holds it, and what is written is the JSON of the whole list."""
    import numpy as np

    encode = RoundsJson()
    rows = [{"round": 0, "selected": "", "accuracy": np.float64(0.25)}]
    for rnd in range(1, 4):
        rows.append({"round": rnd, "selected": " ".join(map(str, range(rnd * 3))), "eval_loss": float("nan"),
                     "failures": np.int64(rnd)})
        with mock.patch("testbed.sim.checkpoint.json.dumps", wraps=json.dumps) as dumps:
            ckpt = _checkpoint(rnd)
            ckpt.rounds = list(rows)
            write_checkpoint(tmp_path, ckpt, encode)
        assert _rows_encoded(dumps) == [rnd] if rnd > 1 else [0, 1]  # the new row alone
        got = read_checkpoint(tmp_path).rounds
        assert [r["round"] for r in got] == list(range(rnd + 1)) and got[0]["accuracy"] == 0.25
        assert got[rnd]["selected"] == rows[rnd]["selected"] and got[rnd]["failures"] == rnd
        assert math.isnan(got[rnd]["eval_loss"]) and type(got[rnd]["failures"]) is int
    # a list that differs (a resumed run's rows: other objects from row 2 on) is encoded from there
    again = rows[:2] + [dict(r, accuracy=0.5) for r in rows[2:]]
    with mock.patch("testbed.sim.checkpoint.json.dumps", wraps=json.dumps) as dumps:
        text = encode(again)
    assert _rows_encoded(dumps) == [2, 3] and json.loads(text) == json.loads(RoundsJson()(again))
    assert [r.get("accuracy") for r in json.loads(text)] == [0.25, None, 0.5, 0.5]
    assert json.loads(encode(again[:1])) == [{"round": 0, "selected": "", "accuracy": 0.25}]


def _rows_encoded(dumps: mock.MagicMock) -> list[int]:
    """The rounds of the rows json.dumps was asked to encode (not the checkpoint's other JSON)."""
    return [c.args[0]["round"] for c in dumps.call_args_list if "selected" in c.args[0]]


def _run(out: Path, rounds: int, *, resume: bool = False) -> dict:
    from testbed.config.scenario import load_scenario
    from testbed.sim.session import run_scenario

    scenario = load_scenario(SMOKE, ["framework.precision=fp32", f"framework.rounds={rounds}"])
    with mock.patch("testbed.sim.session.ComputeReplay", GoldenReplay):
        return run_scenario(scenario, out, replay_dir=str(GOLDEN / "fedllm"), quiet=True, resume=resume)


def test_disk_full_in_round_2_loses_only_that_round(tmp_path):
    """The tables cannot be written in round 2 (ENOSPC): the run ends crashed, its checkpoint of
    round 1 intact; once there is room, --resume ends with the uninterrupted run's tables."""
    from testbed.results.recorder import RunRecorder

    real_flush = RunRecorder.flush

    def flush(self):
        if any(r["round"] == 2 for r in self.rounds):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_flush(self)

    with mock.patch.object(RunRecorder, "flush", flush), pytest.raises(OSError, match="No space left"):
        _run(tmp_path / "run", 3)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "crashed" and "No space left" in summary["error"]
    assert read_checkpoint(tmp_path / "run").round == 1

    assert _run(tmp_path / "run", 3, resume=True)["status"] == "completed"
    assert _run(tmp_path / "reference", 3)["status"] == "completed"
    for table in TABLES:
        assert_tables_equal(pd.read_csv(tmp_path / "reference" / table), pd.read_csv(tmp_path / "run" / table), table)

    # the final adapter as a standard PEFT folder, loaded the way users load one
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(json.loads(
        (tmp_path / "run" / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(tmp_path / "run" / "adapter"))
    loaded = get_peft_model_state_dict(model)
    saved = load_file(str(tmp_path / "run" / "global_adapter.safetensors"))
    assert sorted(loaded) == sorted(saved) and len(saved) > 0
    assert all(torch.equal(loaded[k].float(), saved[k]) for k in saved)


def test_a_framework_that_cannot_be_checkpointed_runs_on_without_checkpoints(tmp_path):
    from testbed.results.recorder import RunRecorder
    from testbed.sim.resume import Checkpoints

    class Uncheckpointable:
        def checkpoint(self):
            raise NotImplementedError("Uncheckpointable cannot be checkpointed")

    said: list[str] = []
    points = Checkpoints(tmp_path, framework=Uncheckpointable(), backend=None, recorder=RunRecorder(tmp_path),
                         ledger=Ledger(), facts=dict, clock=lambda: 0.0, rounds=3, progress=said.append)
    points.after_round(1)
    points.after_round(2)
    assert said == ["no checkpoints in this run (Uncheckpointable cannot be checkpointed): --resume will start it over"]
    assert read_checkpoint(tmp_path) is None
