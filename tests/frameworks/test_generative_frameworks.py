"""The three frameworks on the generative kinds, end to end on the tiny model: the task's metrics
reach rounds.csv, generations reach generations.jsonl, and payloads follow the task's shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from frameworks.kd.public import public_batch
from testbed.config.scenario import load_scenario
from testbed.ml.assets import fetch_all
from testbed.ml.taskdata import build_task_data
from testbed.ml.tasks import scenario_encoder
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
TOPICS = ("markets", "sport", "science")


def alpaca_file(tmp_path: Path, n: int = 60) -> Path:
    """Alpaca-style rows with a topic column: instruction, input (every other row), output."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % 3]
        rows.append({"instruction": f"Write a headline for story {i} about {topic}.",
                     "input": f"The {topic} story number {i} went on." if i % 2 else "",
                     "output": f"{topic.title()} story {i}", "topic": topic})
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _overrides(data: Path, framework: str, extra: list[str]) -> list[str]:
    return [f"framework.name={framework}", "emulation.backend=inproc", "framework.rounds=2",
            "framework.local_steps=2", "framework.batch_size=4", "framework.lr=0.01", "task.kind=instruction",
            "task.template=plain", f"dataset.path={data}", "dataset.columns.group=topic", "dataset.max_tokens=40",
            "dataset.test_size=12", "partition.min_per_client=4", "eval.generate.samples=5",
            "eval.generate.max_new_tokens=6", "framework.kd.public_batch=6", "framework.kd.server_steps=2",
            "dataset.public_size=10", *extra]


def _run(tmp_path: Path, name: str, overrides: list[str]) -> tuple[Path, object]:
    scenario = load_scenario(SMOKE, overrides)
    out = tmp_path / name
    summary = run_scenario(scenario, out, quiet=True)
    assert summary["status"] == "completed"
    return out, scenario


@pytest.mark.parametrize("framework", ["fedllm", "split", "kd"])
def test_instruction_tuning_records_perplexity_rouge_and_generations(assets, tmp_path, framework):
    out, scenario = _run(tmp_path, framework, _overrides(alpaca_file(tmp_path), framework, []))
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert list(rounds.index) == [0, 1, 2]  # round 0: zero-shot
    for column in ("eval_loss", "perplexity", "rouge_l", "exact_match"):
        assert rounds[column].notna().all(), column
    assert rounds.accuracy.isna().all()
    assert rounds.perplexity.tolist() == pytest.approx([math.exp(v) for v in rounds.eval_loss], rel=1e-12)
    assert rounds.rouge_l.between(0, 1).all() and rounds.exact_match.between(0, 1).all()
    gens = pd.read_json(out / "generations.jsonl", lines=True)
    assert gens.groupby("round").size().to_dict() == {0: 5, 1: 5, 2: 5}
    assert set(gens.columns) >= {"round", "prompt", "reference", "output", "rouge_l", "exact_match"}
    # the same five held-out prompts every round
    assert (gens[gens["round"] == 0].prompt.tolist() == gens[gens["round"] == 2].prompt.tolist())
    assert gens[gens["round"] == 2].rouge_l.mean() == pytest.approx(rounds.loc[2, "rouge_l"])
    assert all(p.startswith("### Instruction:\nWrite a headline") for p in gens.prompt)
    if framework == "kd":  # the students' ORT graph (LM head on the reference positions only) agrees with torch
        assert rounds.loc[[1, 2], "ort_top1_agreement"].tolist() == [1.0, 1.0]
        assert rounds.loc[[1, 2], "ort_kl"].max() < 1e-4
        assert rounds.student_perplexity.notna().sum() == 2


def test_fedllm_learns_the_responses(assets, tmp_path):
    out, _ = _run(tmp_path, "learns", _overrides(alpaca_file(tmp_path), "fedllm",
                                                 ["framework.rounds=3", "framework.local_steps=6"]))
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert rounds.loc[3, "perplexity"] < 0.9 * rounds.loc[0, "perplexity"]


def test_kd_sends_top_k_at_every_reference_position(assets, tmp_path):
    out, scenario = _run(tmp_path, "kd-bytes", _overrides(alpaca_file(tmp_path), "kd",
                                                          ["framework.rounds=1", "framework.kd.onnx=false"]))
    data = build_task_data(scenario)
    encoder = scenario_encoder(scenario, str(fetch_all().tiny), data.dataset.labels)
    public = encoder.encode_examples(data.at(public_batch(scenario, data.splits.public, 1)))
    positions = sum(len(ex.target_ids) for ex in public)  # every reference token, the end token included
    assert positions > 6  # more than one position per example, unlike classification
    ev = pd.read_csv(out / "events.csv")
    up = ev[ev.kind == "logits_up"].payload_bytes
    k = scenario.framework.kd.top_k
    assert up.nunique() == 1 and positions * k * 4 < up.iloc[0] < positions * k * 4 + 300  # fp16 + uint16


def test_language_modelling_runs_on_split(assets, tmp_path):
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": [f"Sentence {i} talks about the weather and the sea, again and again." for i in range(60)]}
                 ).to_csv(texts, index=False)
    out, _ = _run(tmp_path, "lm", [
        "framework.name=split", "emulation.backend=inproc", "framework.rounds=1", "framework.local_steps=2",
        "framework.batch_size=2", "task.kind=language_modeling", f"dataset.path={texts}", "dataset.max_tokens=16",
        "dataset.test_size=10", "partition.min_per_client=4"])
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert rounds.perplexity.notna().all() and "rouge_l" not in rounds  # no generation by default
    assert not (out / "generations.jsonl").exists()
    ev = pd.read_csv(out / "events.csv")
    assert (ev.kind == "activations_up").sum() == 2 * 2  # two clients, two steps
