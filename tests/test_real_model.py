"""One short round on the bundled SmolLM2-135M: proves the asset pipeline on a fresh machine."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.config.scenario import load_scenario
from testbed.sim.session import run_scenario

QUICKSTART = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"


@pytest.mark.slow
def test_one_small_round_on_the_real_model(assets, tmp_path):
    scenario = load_scenario(QUICKSTART, [
        "framework.rounds=1", "framework.clients_per_round=2", "framework.local_steps=2",
        "framework.batch_size=4", "dataset.test_size=60",
        "fleet=[{device: pixel-7, link: lte}, {device: jetson-orin-nano, link: wifi}]",
    ])
    summary = run_scenario(scenario, tmp_path / "run", quiet=True)
    assert summary["status"] == "completed"
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv").set_index("round")
    # a pretrained model reads the articles: zero-shot well above chance (0.2 for 5 topics)
    assert rounds.loc[0, "accuracy"] >= 0.35
    assert rounds.loc[1, "participants"] == 2
    # the adapter of SmolLM2 (LoRA r=8 on q/v of 30 layers) is 460,800 fp32 parameters
    ev = pd.read_csv(tmp_path / "run" / "events.csv")
    up = ev[ev.kind == "adapter_up"].payload_bytes
    assert (up > 460_800 * 4).all() and (up < 460_800 * 4 * 1.02).all()
