"""The server on CUDA (server.device): same learning as on the CPU. Runs only where a GPU is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from testbed.config.scenario import load_scenario
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_server_on_cuda_evaluates_like_the_cpu(tmp_path):  # tiny model only: no asset fixture
    common = ["emulation.backend=inproc", "framework.rounds=1"]
    rounds = {}
    for device in ("cpu", "cuda"):
        run_scenario(load_scenario(SMOKE, [*common, f"server.device={device}"]), tmp_path / device, quiet=True)
        rounds[device] = pd.read_csv(tmp_path / device / "rounds.csv").set_index("round")
    for rnd in (0, 1):
        assert rounds["cuda"].loc[rnd, "accuracy"] == pytest.approx(rounds["cpu"].loc[rnd, "accuracy"], abs=0.03)
        assert rounds["cuda"].loc[rnd, "eval_loss"] == pytest.approx(rounds["cpu"].loc[rnd, "eval_loss"], rel=1e-3)
