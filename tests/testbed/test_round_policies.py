"""Round policies, dropouts, link outages and availability on the simulated clock (tiny model)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.config.availability import diurnal
from testbed.config.scenario import load_scenario
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
FAST = ["emulation.backend=inproc", "eval.before_training=false", "framework.local_steps=1"]
# four clients whose uplinks differ by 8x: their arrival order is the reverse of their speed
FLEET = ("fleet=[{device: pixel-7, link: {down_mbps: 50, up_mbps: 0.05, rtt_ms: 10}},"
         "{device: pixel-7, link: {down_mbps: 50, up_mbps: 0.1, rtt_ms: 10}},"
         "{device: pixel-7, link: {down_mbps: 50, up_mbps: 0.2, rtt_ms: 10}},"
         "{device: pixel-7, link: {down_mbps: 50, up_mbps: 0.4, rtt_ms: 10}}]")


def _run(tmp_path: Path, name: str, overrides: list[str], replay: Path | None = None) -> Path:
    out = tmp_path / name
    summary = run_scenario(load_scenario(SMOKE, FAST + overrides), out, quiet=True,
                           replay_dir=str(replay) if replay else None)
    assert summary["status"] == "completed"
    return out


def test_deadline_with_over_selection_keeps_exactly_the_first_k_arrivals(assets, tmp_path):
    everyone = _run(tmp_path, "all", [FLEET, "framework.rounds=1", "framework.clients_per_round=4"])
    ends = pd.read_csv(everyone / "client_rounds.csv").set_index("client").sim_end_s.sort_values()
    first_two = set(ends.index[:2])
    # K = 2 with over-selection 1.0 selects ceil(2 x 2) = 4, the same four clients; the same compute times
    out = _run(tmp_path, "deadline", [FLEET, "framework.rounds=1", "framework.clients_per_round=2",
                                      "policy.kind=deadline", "policy.over_selection=1.0"], replay=everyone)
    rows = pd.read_csv(out / "client_rounds.csv").set_index("client")
    assert set(rows.index) == set(ends.index)
    assert set(rows.index[rows.outcome == "ok"]) == first_two
    assert (rows.loc[list(set(ends.index) - first_two), "outcome"] == "discarded").all()
    assert (rows.loc[list(set(ends.index) - first_two), "cause"] == "late").all()
    rnd = pd.read_csv(out / "rounds.csv").iloc[-1]
    assert rnd.participants == 2 and rnd.discarded == 2 and rnd.failures == 0
    assert rnd.wasted_compute_s > 0
    aggregate = pd.read_csv(out / "events.csv").query("kind == 'aggregate'").iloc[0]
    assert aggregate.sim_start_s == pytest.approx(ends.iloc[1], abs=1e-9)  # closed at the 2nd arrival


def test_a_deadline_closes_the_round_with_what_arrived(assets, tmp_path):
    everyone = _run(tmp_path, "all", [FLEET, "framework.rounds=1", "framework.clients_per_round=4"])
    ends = pd.read_csv(everyone / "client_rounds.csv").sim_end_s.sort_values().to_numpy()
    deadline = (ends[0] + ends[1]) / 2  # only the fastest client makes it
    out = _run(tmp_path, "deadline", [FLEET, "framework.rounds=1", "framework.clients_per_round=4",
                                      "policy.kind=deadline", f"policy.deadline_s={deadline}"], replay=everyone)
    rnd = pd.read_csv(out / "rounds.csv").iloc[-1]
    assert rnd.participants == 1 and rnd.discarded == 3
    aggregate = pd.read_csv(out / "events.csv").query("kind == 'aggregate'").iloc[0]
    assert aggregate.sim_start_s == pytest.approx(deadline)


def test_a_client_computing_when_the_round_closes_counts_its_span_as_wasted(assets, tmp_path):
    """A deadline in the middle of a client's compute span: the client finishes the span (it
    learns of the close at its next action), so its row counts the span whole, as wasted compute
    the round's row sums, and ends where the span ends; clients between actions end at the close."""
    everyone = _run(tmp_path, "all", [FLEET, "framework.rounds=1", "framework.clients_per_round=4"])
    spans = pd.read_csv(everyone / "events.csv").query("kind == 'compute'").set_index("client")
    cid = spans.sim_start_s.idxmax()  # the last to start computing
    span = spans.loc[cid]
    deadline = span.sim_start_s + 0.4 * span.device_s
    out = _run(tmp_path, "deadline", [FLEET, "framework.rounds=2", "framework.clients_per_round=4",
                                      "policy.kind=deadline", f"policy.deadline_s={deadline}"], replay=everyone)
    rows = pd.read_csv(out / "client_rounds.csv").query("round == 1").set_index("client")
    row = rows.loc[cid]
    assert (row.outcome, row.cause) == ("discarded", "late")
    before = pd.read_csv(everyone / "client_rounds.csv").set_index("client").loc[cid]
    for column in ("device_compute_s", "host_compute_s", "dilation_factor", "compute_energy_j"):
        assert row[column] == pytest.approx(before[column], rel=1e-9), column
    assert row.sim_end_s == pytest.approx(span.sim_end_s) and row.bound == "compute"
    rnd = pd.read_csv(out / "rounds.csv").query("round == 1").iloc[0]
    assert rnd.wasted_compute_s == pytest.approx(rows.query("outcome != 'ok'").device_compute_s.sum())
    assert rnd.wasted_compute_s >= row.device_compute_s > 0
    # the span's event, written when it ended (in round 2's simulated time), is the one the row counts
    events = pd.read_csv(out / "events.csv").query(f"round == 1 and kind == 'compute' and client == {cid}")
    assert events.device_s.tolist() == pytest.approx([span.device_s]) and events.status.tolist() == ["ok"]
    between = rows.query("outcome == 'discarded'").drop(index=cid)  # not computing at the close
    assert all(s in (pytest.approx(deadline), pytest.approx(spans.loc[c].sim_end_s))
               for c, s in between.sim_end_s.items())


def test_a_link_outage_mid_transfer_is_a_failure_with_its_cause(assets, tmp_path):
    # a 64 kbit/s downlink needs several seconds for the adapter; the link drops at t = 1 s
    out = _run(tmp_path, "outage", ["framework.rounds=1", "framework.clients_per_round=1",
                                    "fleet=[{device: pixel-7, link: {down_mbps: 0.064, up_mbps: 1, rtt_ms: 0}}]",
                                    "server.link.rtt_ms=0", "network.outages=[[1.0, 100.0]]"])
    row = pd.read_csv(out / "client_rounds.csv").iloc[0]
    assert row.outcome == "failed" and row.cause == "disconnected"
    down = pd.read_csv(out / "events.csv").query("kind == 'adapter_down'").iloc[0]
    assert down.status == "failed" and down.sim_end_s == pytest.approx(1.0)
    rnd = pd.read_csv(out / "rounds.csv").iloc[-1]
    assert rnd.participants == 0 and rnd.failures == 1


def test_dropouts_are_seeded_failures_after_the_work(assets, tmp_path):
    out = _run(tmp_path, "drop", ["framework.rounds=2", "framework.clients_per_round=3", "availability.dropout=0.5"])
    rows = pd.read_csv(out / "client_rounds.csv")
    dropped = rows[rows.cause == "dropout"]
    assert 0 < len(dropped) < len(rows)
    assert (dropped.device_compute_s > 0).all() and (dropped.bytes_up == 0).all()
    again = pd.read_csv(_run(tmp_path, "drop2", ["framework.rounds=2", "framework.clients_per_round=3",
                                                 "availability.dropout=0.5"]) / "client_rounds.csv")
    assert list(again.cause.fillna("")) == list(rows.cause.fillna(""))


def test_only_online_clients_are_selected(assets, tmp_path):
    out = _run(tmp_path, "diurnal", ["framework.rounds=3", "framework.clients_per_round=1",
                                     "availability.kind=diurnal", "availability.period_s=20",
                                     "availability.on_fraction=0.3"])
    plan = diurnal(3, period_s=20.0, on_fraction=0.3, seed=0)
    for row in pd.read_csv(out / "client_rounds.csv").itertuples():
        assert plan[row.client].online(row.sim_start_s)
