"""FedBuff (`policy.kind: fedbuff`): asynchronous buffered aggregation on the simulated clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from frameworks.aggregate import buffered_step, fedavg, staleness_weight
from testbed.config.scenario import ScenarioError, load_scenario
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
FAST_RUN = ["emulation.backend=inproc", "framework.local_steps=1", "policy.kind=fedbuff"]
FAST, SLOW = 0, 1
# client 0 uploads 10x faster than client 1: several server versions pass while client 1 trains
TWO_SPEEDS = ("fleet=[{device: pixel-7, link: {down_mbps: 50, up_mbps: 2, rtt_ms: 10}},"
              "{device: pixel-7, link: {down_mbps: 50, up_mbps: 0.2, rtt_ms: 10}}]")


def _run(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    out = tmp_path / name
    summary = run_scenario(load_scenario(SMOKE, FAST_RUN + overrides), out, quiet=True)
    assert summary["status"] == "completed"
    return out


def _versions_between(aggregate_ends_s: np.ndarray, start_s: float, end_s: float) -> int:
    """Server versions finished strictly inside (start_s, end_s)."""
    return int(((aggregate_ends_s > start_s) & (aggregate_ends_s < end_s)).sum())


def test_staleness_is_the_number_of_versions_made_while_the_client_trained(assets, tmp_path):
    out = _run(tmp_path, "fedbuff", [TWO_SPEEDS, "framework.rounds=10", "framework.clients_per_round=2",
                                     "policy.buffer_size=1", "policy.concurrency=2", "eval.every=100"])
    rows = pd.read_csv(out / "client_rounds.csv")
    aggregate_ends_s = pd.read_csv(out / "events.csv").query("kind == 'aggregate'").sim_end_s.to_numpy()
    ok = rows[rows.outcome == "ok"]
    assert len(ok) == 10  # buffer_size 1: one update per server version
    for row in rows.itertuples():  # each client starts from the version current at its simulated start
        assert row.start_version == int((aggregate_ends_s <= row.sim_start_s).sum())
    for row in ok.itertuples():
        assert row.staleness == _versions_between(aggregate_ends_s, row.sim_start_s, row.sim_end_s)

    slow = ok[ok.client == SLOW].iloc[0]
    made_while_slow = _versions_between(aggregate_ends_s, slow.sim_start_s, slow.sim_end_s)
    assert slow.start_version == 0 and made_while_slow >= 3
    assert slow.staleness == made_while_slow
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert rounds.loc[slow["round"], "mean_staleness"] == made_while_slow
    assert rounds.loc[slow["round"], "straggler"] == SLOW

    fast = ok[ok.client == FAST]
    slow_ends_s = ok[ok.client == SLOW].sim_end_s.to_numpy()  # measured compute: the slow client may land twice
    overlaps_slow_arrival = fast.apply(
        lambda r: bool(((r.sim_start_s < slow_ends_s) & (r.sim_end_s > slow_ends_s)).any()), axis=1)
    assert overlaps_slow_arrival.sum() <= len(slow_ends_s)  # a fast update in flight when a slow one landed
    assert len(fast[~overlaps_slow_arrival]) >= 3
    assert (fast[~overlaps_slow_arrival].staleness == 0).all()


def test_updates_older_than_max_staleness_are_discarded(assets, tmp_path):
    out = _run(tmp_path, "stale", [TWO_SPEEDS, "framework.rounds=10", "framework.clients_per_round=2",
                                   "policy.buffer_size=1", "policy.concurrency=2", "policy.max_staleness=1",
                                   "eval.every=100"])
    rows = pd.read_csv(out / "client_rounds.csv")
    slow = rows[rows.client == SLOW].iloc[0]
    assert slow.outcome == "discarded" and slow.cause == "stale" and slow.staleness >= 3
    assert rows[rows.outcome == "ok"].staleness.max() <= 1
    rnd = pd.read_csv(out / "rounds.csv").set_index("round").loc[slow["round"]]
    assert rnd.discarded == 1 and rnd.wasted_compute_s == pytest.approx(slow.device_compute_s)


def test_staleness_weight_and_the_buffered_server_step():
    assert staleness_weight(100, 0, 0.5) == 100.0
    assert staleness_weight(100, 3, 0.5) == pytest.approx(50.0)  # 100 x (1 + 3)^-0.5
    assert staleness_weight(100, 3, 0.0) == 100.0  # exponent 0: no discount
    global_state = {"a": torch.tensor([1.0, 2.0])}
    fresh = {"a": torch.tensor([3.0, 2.0])}  # trained from the current global: delta [2, 0]
    stale_start = {"a": torch.tensor([0.0, 0.0])}  # an older version
    stale = {"a": torch.tensor([0.0, 6.0])}  # delta [0, 6] from its own start
    weights = [staleness_weight(100, 0, 0.5), staleness_weight(100, 3, 0.5)]  # 100, 50
    new = buffered_step(global_state, [fresh, stale], [global_state, stale_start], weights)
    # [1 + (100 x 2 + 50 x 0) / 150, 2 + (100 x 0 + 50 x 6) / 150]
    assert torch.allclose(new["a"], torch.tensor([1.0 + 4.0 / 3.0, 4.0]))
    # all trained from the current global: the step is FedAvg of the updates
    same_start = buffered_step(global_state, [fresh, stale], [global_state, global_state], weights)
    assert torch.allclose(same_start["a"], fedavg([fresh, stale], weights)["a"])


def test_one_row_per_server_version(assets, tmp_path):
    out = _run(tmp_path, "versions", ["framework.rounds=3", "framework.clients_per_round=2",
                                      "policy.buffer_size=2", "policy.concurrency=3"])
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2, 3]
    assert (rounds.sim_end_s.diff().iloc[1:] > 0).all()
    assert (rounds.participants.iloc[1:] == 2).all()
    assert rounds.accuracy.notna().all()
    rows = pd.read_csv(out / "client_rounds.csv")
    assert list(rows[rows.outcome == "ok"].groupby("round").size()) == [2, 2, 2]
    ended = rows[rows.cause == "run_ended"]
    assert list(ended["round"]) == [3, 3]  # the two clients still training when version 3 was made
    assert rounds.set_index("round").loc[3, "discarded"] == 2


@pytest.mark.parametrize("framework", ["split", "kd"])
def test_fedbuff_is_for_fedllm_only(framework):
    with pytest.raises(ScenarioError) as err:
        load_scenario(SMOKE, [f"framework.name={framework}", "policy.kind=fedbuff"])
    assert str(err.value) == (f"{SMOKE}: policy.kind: fedbuff applies to fedllm (split and kd exchange per "
                              "step / per public batch and keep synchronous rounds)")
