"""KD-FedLLM end to end on the tiny model: logits travel both ways, bytes follow k and the
public batch (not the student's size), and distillation moves a model toward its target."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from frameworks.kd.framework import distill, encode_public, position_logits
from frameworks.kd.logits import SparseTarget, sparse_kl, top_k_of
from frameworks.kd.student import load_student
from testbed.config.scenario import KDOptions, LoraConfig, ScenarioError, load_scenario
from testbed.ml.modeling import OptimizerSpec, attach_lora, load_tokenizer
from testbed.ml.data import Example
from testbed.ml.task import TaskEncoder
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
BASE = ["framework.name=kd", "emulation.backend=inproc", "framework.local_steps=2", "framework.batch_size=4",
        "framework.kd.public_batch=8", "framework.kd.server_steps=2", "eval.before_training=false"]


def _run(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    out = tmp_path / name
    summary = run_scenario(load_scenario(SMOKE, BASE + overrides), out, quiet=True)
    assert summary["status"] == "completed"
    return out


def test_logits_travel_up_every_round_and_down_from_the_second(assets, tmp_path):
    out = _run(tmp_path, "kd", ["framework.rounds=2"])
    ev = pd.read_csv(out / "events.csv")
    clients = ev[ev.client >= 0]
    for (rnd, client), rows in clients.groupby(["round", "client"]):
        assert (rows.kind == "logits_up").sum() == 1, (rnd, client)
        assert (rows.kind == "logits_down").sum() == (1 if rnd >= 2 else 0), (rnd, client)
        assert (rows.kind == "server_compute").sum() == 1  # the server decodes each arrival in its queue
    assert not ev.kind.str.startswith("adapter").any()  # no weights travel
    # up: 8 answer positions x top-8 (fp16 values + uint16 indices) + header; down adds 8 public ids
    up = clients[clients.kind == "logits_up"].payload_bytes
    down = clients[clients.kind == "logits_down"].payload_bytes
    assert up.nunique() == 1 and 8 * 8 * 4 < up.iloc[0] < 8 * 8 * 4 + 300
    assert (down > up.iloc[0]).all()
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    for col in ("accuracy", "student_accuracy", "teacher_distill_loss", "ort_top1_agreement", "client_model_mb"):
        assert rounds[col].notna().all(), col
    assert (rounds.ort_top1_agreement == 1.0).all()
    assert rounds.loc[1, "onnx_export_s"] > 0


def test_bytes_per_client_round_do_not_depend_on_the_students_size(assets, tmp_path):
    sizes = {}
    for spec in ("first:1", "first:4"):
        out = _run(tmp_path, spec.replace(":", ""), ["framework.rounds=1", f"framework.kd.student_layers={spec}",
                                                     "framework.kd.onnx=false"])
        ev = pd.read_csv(out / "events.csv")
        sizes[spec] = ev[ev.kind == "logits_up"].payload_bytes.tolist()
    n1 = sum(p.numel() for p in load_student(str(assets.tiny), "first:1").parameters())
    n4 = sum(p.numel() for p in load_student(str(assets.tiny), "first:4").parameters())
    assert n4 > n1
    assert sizes["first:1"] == sizes["first:4"]


def test_full_vocabulary_logits_cost_what_they_weigh(assets, tmp_path):
    out = _run(tmp_path, "full", ["framework.rounds=1", "framework.kd.top_k=0", "framework.kd.onnx=false"])
    ev = pd.read_csv(out / "events.csv")
    vocab = len(load_tokenizer(str(assets.tiny)))
    up = ev[ev.kind == "logits_up"].payload_bytes
    assert ((up - 8 * vocab * 2) > 0).all() and ((up - 8 * vocab * 2) < 300).all()


@pytest.mark.parametrize("positions", ["answer", "all"])
def test_distillation_lowers_the_kl_to_the_target(assets, positions):
    torch.manual_seed(0)
    encoder = TaskEncoder(load_tokenizer(str(assets.tiny)), ("business", "sport"), max_tokens=16)
    texts = [f"Report number {i} on markets, matches and new gadgets." for i in range(8)]
    examples = encode_public(encoder, [Example(t, "business") for t in texts])
    model = attach_lora(load_student(str(assets.tiny), "first:4"),
                        LoraConfig(r=4, alpha=8, targets=("q_proj", "v_proj", "lm_head")), seed=0)
    opts = KDOptions(positions=positions, temperature=2.0)
    teacher = load_student(str(assets.tiny), "first:2")  # a different model of the same vocabulary
    with torch.no_grad():
        target = SparseTarget.from_topk(top_k_of(position_logits(teacher, encoder, examples, opts), 8, 2.0))

    def kl() -> float:
        with torch.no_grad():
            return float(sparse_kl(position_logits(model, encoder, examples, opts), target, 2.0))

    before = kl()
    losses = distill(model, encoder, examples, target, opts, steps=15, batch_size=4,
                     optimizer=OptimizerSpec("adamw", 1e-2), seed=0)
    assert len(losses) == 15
    assert kl() < 0.7 * before


def test_kd_needs_enough_public_examples():
    s = load_scenario(SMOKE, ["framework.name=kd"])
    assert s.dataset.public_size == 200  # held out only when kd runs
    assert load_scenario(SMOKE).dataset.public_size == 0
    with pytest.raises(ScenarioError, match="public_size=10 is smaller than framework.kd.public_batch=32"):
        load_scenario(SMOKE, ["framework.name=kd", "dataset.public_size=10"])


def test_bad_student_layers_are_named(assets, tmp_path):
    with pytest.raises(ScenarioError, match="framework.kd.student_layers: 'abc': expected first:N"):
        load_scenario(SMOKE, ["framework.name=kd", "framework.kd.student_layers=abc"])
    with pytest.raises(ScenarioError, match="framework.kd.student_layers: 'first:9': the model has 4 blocks"):
        _run(tmp_path, "bad", ["framework.rounds=1", "framework.kd.student_layers=first:9"])
