"""Split-FedLLM end to end on the tiny model: every step crosses the network, in both variants."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.config.scenario import load_scenario
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
BASE = ["framework.name=split", "emulation.backend=inproc", "framework.rounds=1", "framework.local_steps=3",
        "framework.batch_size=4", "eval.before_training=false"]


def _run(tmp_path: Path, name: str, overrides: list[str], replay: Path | None = None) -> Path:
    out = tmp_path / name
    summary = run_scenario(load_scenario(SMOKE, BASE + overrides), out, quiet=True,
                           replay_dir=str(replay) if replay else None)
    assert summary["status"] == "completed"
    return out


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_every_step_sends_activations_up_and_gradients_down(assets, tmp_path, variant):
    out = _run(tmp_path, variant, [f"framework.split.variant={variant}", "framework.clients_per_round=2"])
    ev = pd.read_csv(out / "events.csv")
    for client, rows in ev[ev.client >= 0].groupby("client"):
        assert (rows.kind == "activations_up").sum() == 3, client
        assert (rows.kind == "gradients_down").sum() == 3, client
        assert (rows.kind == "server_compute").sum() == 3, client
        assert (rows.kind == "adapter_up").sum() == 1
    # a step's activations are B x T x C fp32 values (+ mask, labels, header); its gradient B x T x C
    up = ev[ev.kind == "activations_up"].payload_bytes.to_numpy()
    down = ev[ev.kind == "gradients_down"].payload_bytes.to_numpy()
    assert (up > down).all() and (down > 4 * 4 * 64 * 4).all()
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert rounds.loc[1, "participants"] == 2 and rounds.loc[1, "train_loss"] > 0


def test_compression_shrinks_the_per_step_payloads(assets, tmp_path):
    sizes = {}
    for comp in ("fp32", "fp16", "int8"):
        ev = pd.read_csv(_run(tmp_path, comp, [f"framework.split.compression={comp}"]) / "events.csv")
        sizes[comp] = ev[ev.kind == "gradients_down"].payload_bytes.mean()
    assert sizes["fp16"] == pytest.approx(sizes["fp32"] / 2, rel=0.1)
    assert sizes["int8"] == pytest.approx(sizes["fp32"] / 4, rel=0.2)


def test_round_time_grows_with_latency_times_steps(assets, tmp_path):
    link = "fleet=[{{device: pixel-7, link: {{down_mbps: 50, up_mbps: 50, rtt_ms: {rtt}}}}}]"
    common = ["framework.clients_per_round=1", "server.link.rtt_ms=0", "framework.local_steps=4"]
    fast = _run(tmp_path, "rtt0", common + [link.format(rtt=0)])
    slow = _run(tmp_path, "rtt200", common + [link.format(rtt=200)], replay=fast)
    d_fast = pd.read_csv(fast / "rounds.csv").sim_duration_s.iloc[-1]
    d_slow = pd.read_csv(slow / "rounds.csv").sim_duration_s.iloc[-1]
    # 4 steps x (activations up + gradients down) + adapter down + adapter up = 10 one-way trips
    assert d_slow - d_fast == pytest.approx(10 * 0.100, rel=0.01)


def test_bad_cut_layer_is_named(assets, tmp_path):
    with pytest.raises(ValueError, match="framework.split.cut_layer=4"):
        _run(tmp_path, "bad", ["framework.split.cut_layer=4"])


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_client_blocks_train(assets, tmp_path, scheme):
    out = _run(tmp_path, scheme, [f"framework.split.quantization={scheme}"])
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert rounds.loc[1, "participants"] == 2 and rounds.loc[1, "train_loss"] > 0
    ev = pd.read_csv(out / "events.csv")
    assert (ev.kind == "gradients_down").sum() == 2 * 3
