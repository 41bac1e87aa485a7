"""The round loop on the simulated clock, end to end on the tiny model (inproc backend)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.config.scenario import load_scenario
from testbed.sim.session import run_scenario

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.yaml"
FAST = ["emulation.backend=inproc", "eval.before_training=false"]


def _run(tmp_path: Path, name: str, overrides: list[str], replay: Path | None = None) -> Path:
    out = tmp_path / name
    scenario = load_scenario(SMOKE, FAST + overrides)
    summary = run_scenario(scenario, out, replay_dir=str(replay) if replay else None, quiet=True)
    assert summary["status"] == "completed"
    return out


def _exchanges(out: Path, kind: str) -> pd.DataFrame:
    ev = pd.read_csv(out / "events.csv")
    rows = ev[ev.kind == kind].copy()
    rows["duration_s"] = rows.sim_end_s - rows.sim_start_s
    return rows


def test_exchange_time_is_half_rtt_plus_serialisation(assets, tmp_path):
    # one client per round on a 2 Mbit/s, 80 ms link; the server link is far faster and adds no delay
    out = _run(tmp_path, "const", [
        "framework.clients_per_round=1", "framework.rounds=2", "emulation.protocol_overhead=false",
        "server.link.rate_mbps=100000", "server.link.rtt_ms=0",
        "fleet=[{device: pixel-7, link: {down_mbps: 2, up_mbps: 1, rtt_ms: 80}, count: 2}]",
    ])
    for kind, rate_mbps in (("adapter_down", 2.0), ("adapter_up", 1.0)):
        rows = _exchanges(out, kind)
        assert len(rows) == 2
        for row in rows.itertuples():
            expected_s = 0.040 + row.payload_bytes * 8 / (rate_mbps * 1e6)
            assert row.duration_s == pytest.approx(expected_s, rel=0.01)
            assert row.wire_bytes == row.payload_bytes  # overhead off


def test_protocol_overhead_is_reported_apart_from_payload(assets, tmp_path):
    out = _run(tmp_path, "overhead", ["framework.rounds=1"])
    rows = _exchanges(out, "adapter_up")
    for row in rows.itertuples():
        assert row.wire_bytes == row.payload_bytes + -(-row.payload_bytes // 1460) * 40


def test_shared_server_bottleneck_doubles_download_time(assets, tmp_path):
    # clients on fast links behind a 1 Mbit/s server: the server link is the bottleneck
    fleet = "fleet=[{device: pixel-7, link: wifi, count: 2}]"
    common = ["framework.rounds=1", "server.link.rate_mbps=1", "server.link.rtt_ms=0",
              "emulation.protocol_overhead=false", fleet]
    alone = _exchanges(_run(tmp_path, "alone", common + ["framework.clients_per_round=1"]), "adapter_down")
    both = _exchanges(_run(tmp_path, "both", common + ["framework.clients_per_round=2"]), "adapter_down")
    one_s = alone.duration_s.iloc[0]
    assert len(both) == 2
    for d in both.duration_s:
        assert d == pytest.approx(2 * one_s, rel=0.05)


def test_same_seed_same_learning_and_replay_gives_identical_rounds(assets, tmp_path):
    first = _run(tmp_path, "a", ["framework.rounds=2"])
    second = _run(tmp_path, "b", ["framework.rounds=2"])
    ra, rb = pd.read_csv(first / "rounds.csv"), pd.read_csv(second / "rounds.csv")
    same = ["round", "selected", "participants", "failures", "train_loss", "eval_loss", "accuracy",
            "bytes_up", "bytes_down", "wire_bytes_up", "wire_bytes_down"]
    pd.testing.assert_frame_equal(ra[same], rb[same])
    replayed = _run(tmp_path, "c", ["framework.rounds=2"], replay=first)
    rc = pd.read_csv(replayed / "rounds.csv")
    timing = ["sim_start_s", "sim_end_s", "sim_duration_s", "straggler", "server_compute_s"]
    pd.testing.assert_frame_equal(ra[same + timing], rc[same + timing])


def test_simulated_round_follows_the_slowest_client(assets, tmp_path):
    out = _run(tmp_path, "straggle", ["framework.rounds=1", "framework.clients_per_round=3"])
    cr = pd.read_csv(out / "client_rounds.csv")
    rounds = pd.read_csv(out / "rounds.csv")
    r1 = rounds[rounds["round"] == 1].iloc[0]
    slowest = cr.loc[cr.sim_end_s.idxmax()]
    assert int(r1.straggler) == int(slowest.client)
    assert r1.sim_end_s == pytest.approx(slowest.sim_end_s + r1.server_compute_s, rel=1e-9)
    # device time really is host time converted by each device's roofline
    for row in cr.itertuples():
        assert row.device_compute_s == pytest.approx(row.host_compute_s * row.dilation_factor, rel=1e-9)
    assert cr.groupby("device").dilation_factor.first().nunique() == 3


def _csv(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "mine.csv"
    pd.DataFrame(rows, columns=["body", "topic"]).to_csv(path, index=False)
    return path


def test_bring_your_own_csv_runs_without_code_changes(assets, tmp_path):
    words = {"weather": "rain sun cloud wind storm", "cooking": "pan salt oven bake stir"}
    rows = [(f"{words[t]} note {i}", t) for i in range(60) for t in words]
    path = _csv(tmp_path, rows)
    out = _run(tmp_path, "byo", ["framework.rounds=1", f"dataset={{path: {path}, text: body, label: topic, "
                                 "max_tokens: 16, test_size: 20}", "partition.min_per_client=4"])
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds.accuracy.notna().all()
    cr = pd.read_csv(out / "client_rounds.csv")
    assert cr.n_samples.sum() <= 100  # 120 rows minus 20 held out, shared by the selected clients


def test_bad_own_data_exits_2_naming_the_problem(assets, tmp_path, capsys):
    from testbed.cli.main import main

    path = _csv(tmp_path, [(f"text {i}", "only") for i in range(30)])
    code = main(["run", str(SMOKE), "--set", f"dataset={{path: {path}, text: body, label: topic}}",
                 "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "mine.csv" in err and "at least 2 distinct labels" in err
    code = main(["run", str(SMOKE), "--set", f"dataset={{path: {path}, text: missing, label: topic}}",
                 "--out", str(tmp_path / "y"), "--quiet"])
    assert code == 2
    assert "missing" in capsys.readouterr().err


TRACES = REPO.parent / "shared" / "data" / "traces" / "mahimahi"


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/data traces not present")
def test_trace_driven_client_link_is_slower_than_a_fast_constant_one(assets, tmp_path):
    up, down = TRACES / "Verizon-EVDO-driving.up", TRACES / "Verizon-EVDO-driving.down"
    fleet = (f"fleet=[{{device: pixel-7, link: {{trace_up: {up}, trace_down: {down}, rtt_ms: 100}}}}, "
             "{device: pixel-7, link: {down_mbps: 50, up_mbps: 50, rtt_ms: 100}}]")
    out = _run(tmp_path, "trace", ["framework.rounds=1", "framework.clients_per_round=2", fleet])
    ev = pd.read_csv(out / "events.csv")
    ups = ev[ev.kind == "adapter_up"].set_index("client")
    dur = ups.sim_end_s - ups.sim_start_s
    # EV-DO uplink averages ~0.84 Mbit/s: the ~17 KB adapter takes far longer than at 50 Mbit/s
    assert dur.loc[0] > 2.5 * dur.loc[1]
    assert dur.loc[0] == pytest.approx(0.05 + ups.loc[0, "wire_bytes"] * 8 / 0.84e6, rel=0.6)


def test_bad_trace_in_scenario_names_field_and_line(tmp_path):
    bad = tmp_path / "bad.up"
    bad.write_text("5\n3\n")
    from testbed.config.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"bad.up: line 2: timestamp 3 decreases .*fleet.0.link.trace_up"):
        load_scenario(SMOKE, ["framework.clients_per_round=1",
                              f"fleet=[{{device: pixel-7, link: {{trace_up: {bad}, down_mbps: 5}}}}]"])


def test_host_timeline_holds_every_span_aggregation_and_evaluation(assets, tmp_path):
    import time

    t_start = time.time()
    out = _run(tmp_path, "timeline", ["eval.before_training=true"])
    t_end = time.time()
    tl = pd.read_csv(out / "host_timeline.csv")
    assert list(tl.columns) == ["round", "who", "kind", "t0_unix", "t1_unix", "host_s"]
    ev = pd.read_csv(out / "events.csv")
    compute = ev[(ev.kind == "compute") & (ev.status == "ok")]
    train = tl[tl.who.str.startswith("client-")]
    # one interval per client span, with the span's measured host seconds
    assert sorted(zip(train["round"], train.who, train.host_s.round(9), strict=True)) == sorted(
        zip(compute["round"], "client-" + compute.client.astype(str), compute.host_s.round(9), strict=True))
    assert tl[tl.kind == "eval"]["round"].tolist() == [0, 1, 2]
    assert tl[tl.kind == "aggregate"]["round"].tolist() == [1, 2]
    assert (tl.t1_unix - tl.t0_unix).tolist() == pytest.approx(tl.host_s.tolist(), abs=1e-5)
    assert (tl.t0_unix >= t_start).all() and (tl.t1_unix <= t_end).all()
    rounds = pd.read_csv(out / "rounds.csv")
    assert tl[tl.kind == "eval"].host_s.tolist() == pytest.approx(rounds.host_eval_s.tolist())
