"""`emulation.compute: predicted`: a fleet's work from a cost table measured on this host.

The tables of a predicted run have the measured run's columns and payload bytes; its compute
spans convert to device time exactly as measured ones do; it follows availability, dropouts,
deadlines, FedBuff and fault injection; its cost table is cached, and a bad one is refused by
field.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.config.scenario import load_scenario
from testbed.sim.costs import CostTable, CostTableError
from testbed.sim.session import run_scenario

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.yaml"
PREDICTED = "emulation.compute=predicted"
TABLES = ("rounds.csv", "client_rounds.csv", "events.csv", "host_timeline.csv")


def _run(out: Path, overrides: list[str]) -> dict:
    summary = run_scenario(load_scenario(SMOKE, overrides), out, quiet=True)
    assert summary["status"] == "completed", summary.get("error")
    return summary


@pytest.fixture(scope="module")
def measured_and_predicted(assets, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("smoke")
    _run(base / "measured", ["framework.precision=fp32"])
    _run(base / "predicted", ["framework.precision=fp32", PREDICTED])
    return base / "measured", base / "predicted"


def test_predicted_tables_have_the_measured_columns_and_bytes(measured_and_predicted):
    measured, predicted = measured_and_predicted
    for table in TABLES:
        assert list(pd.read_csv(predicted / table).columns) == list(pd.read_csv(measured / table).columns), table
    m_events, p_events = pd.read_csv(measured / "events.csv"), pd.read_csv(predicted / "events.csv")
    by_kind = [e.query("kind not in ['compute', 'aggregate', 'server_compute']").groupby("kind").payload_bytes.sum()
               for e in (m_events, p_events)]
    assert by_kind[0].to_dict() == by_kind[1].to_dict() and by_kind[0].sum() > 0
    # the same exchanges, in the same rounds, for the same clients (selection is seeded alike)
    key = ["round", "client", "kind"]
    assert sorted(map(tuple, p_events[key].values.tolist())) == sorted(map(tuple, m_events[key].values.tolist()))
    for run in measured_and_predicted:  # simulated instants are written as floats from the start (0.0, not 0)
        starts = {table: set(pd.read_csv(run / table, dtype=str, keep_default_na=False)["sim_start_s"])
                  for table in ("rounds.csv", "client_rounds.csv", "events.csv")}
        assert "0.0" in set.union(*starts.values()) and not any("0" in s for s in starts.values()), starts


def test_predicted_metrics_are_empty_and_the_summary_says_predicted(measured_and_predicted):
    _, predicted = measured_and_predicted
    rounds = pd.read_csv(predicted / "rounds.csv")
    assert rounds["accuracy"].isna().all() and rounds["train_loss"].isna().all()
    assert rounds["bytes_up"].iloc[1:].gt(0).all() and rounds["sim_duration_s"].iloc[1:].gt(0).all()
    summary = json.loads((predicted / "summary.json").read_text())
    assert summary["compute"] == "predicted" and summary["backend"]["compute"] == "predicted"
    assert summary["backend"]["probe_clients"] >= 1
    assert (predicted / "costs.json").is_file()
    clients = pd.read_csv(predicted / "client_rounds.csv")
    assert clients["n_samples"].isna().all() and clients["train_loss"].isna().all()


def test_predicted_spans_convert_to_device_time_as_measured_ones(measured_and_predicted):
    """Each predicted span is the cost table's, dilated with the table's calibration by the
    clock's roofline: device_s / host_s is the measured run's factor for that device."""
    from testbed.host.roofline import dilate

    measured, predicted = measured_and_predicted
    table = CostTable.from_json((predicted / "costs.json").read_text(), "costs.json")
    (span,) = [s for step in table.for_round(1).steps for s in getattr(step, "spans", ())]
    clients = json.loads((predicted / "summary.json").read_text())["clients"]
    from device_profiles import get_device

    compute = pd.read_csv(predicted / "events.csv").query("kind == 'compute'")
    assert len(compute) > 0
    for row in compute.itertuples():
        device = get_device(clients[row.client]["device"])
        gflops = device.accelerator_gflops or device.cpu_gflops  # emulation.use_accelerator: true
        d = dilate(span.host_s, workload=span.workload, host=table.calibration, device_gflops=gflops,
                   device_mem_bandwidth_gbps=device.mem_bandwidth_gbps, precision=span.precision)
        assert row.host_s == pytest.approx(span.host_s, rel=1e-12)
        assert row.device_s == pytest.approx(d.device_s, rel=1e-9)
    # the measured run's spans of the same label sit near the probed mean (same host, same shapes)
    measured_host = pd.read_csv(measured / "events.csv").query("kind == 'compute'").host_s
    assert 0.2 < span.host_s / measured_host.median() < 5


def test_the_cost_table_is_cached_per_host_and_shapes(assets, tmp_path, monkeypatch):
    from testbed.sim import predicted

    monkeypatch.setattr(predicted, "costs_dir", lambda: tmp_path / "cache")
    _run(tmp_path / "a", ["emulation.backend=inproc", PREDICTED])
    cached = list((tmp_path / "cache" / "costs").glob("*.json"))
    assert len(cached) == 1
    first = cached[0].read_text()
    _run(tmp_path / "b", ["emulation.backend=inproc", PREDICTED, "framework.rounds=3", "network.on_outage=fail"])
    assert list((tmp_path / "cache" / "costs").glob("*.json")) == cached and cached[0].read_text() == first
    _run(tmp_path / "c", ["emulation.backend=inproc", PREDICTED, "framework.batch_size=2"])  # another shape
    assert len(list((tmp_path / "cache" / "costs").glob("*.json"))) == 2
    # a damaged cache file is measured again, not trusted
    cached[0].write_text('{"format": "testbed-costs/2", "rounds": "x"}')
    _run(tmp_path / "d", ["emulation.backend=inproc", PREDICTED])
    assert json.loads(cached[0].read_text())["rounds"][0]["round"] == 1


@pytest.mark.parametrize("overrides", [
    ["framework.name=split", "framework.split.cut_layer=1"],
    ["framework.name=kd", "framework.rounds=3", "framework.kd.public_batch=8", "dataset.public_size=40",
     "framework.kd.server_steps=1"],
    ["policy.kind=fedbuff", "framework.rounds=4"],
    ["policy.kind=deadline", "policy.over_selection=0.5", "policy.deadline_s=0.05", "framework.rounds=3",
     "availability.dropout=0.3", "faults.kill=[{round: 2, client: 1}]"],
], ids=["split", "kd", "fedbuff", "deadline-dropout-kill"])
def test_every_framework_and_policy_runs_predicted(assets, tmp_path, overrides):
    out = tmp_path / "run"
    _run(out, ["emulation.backend=inproc", PREDICTED, *overrides])
    rounds, clients = pd.read_csv(out / "rounds.csv"), pd.read_csv(out / "client_rounds.csv")
    scenario = load_scenario(SMOKE, overrides)
    assert rounds["round"].max() == scenario.framework.rounds
    assert set(clients["outcome"]) <= {"ok", "failed", "oom", "discarded"}
    events = pd.read_csv(out / "events.csv")
    if "framework.name=split" in overrides:  # activations up and gradients down every step
        steps = scenario.framework.local_steps
        ok = clients.query("outcome == 'ok'")
        for row in ok.itertuples():
            mine = events.query(f"round == {row.round} and client == {row.client}")
            assert (mine.kind == "activations_up").sum() == steps == (mine.kind == "gradients_down").sum()
            assert (events.query(f"round == {row.round} and client == {row.client} and kind == 'server_compute'")
                    .shape[0]) == steps
    if "faults.kill=[{round: 2, client: 1}]" in overrides:
        killed = clients.query("round == 2 and client == 1")
        assert killed.empty or killed.cause.iloc[0] in ("killed", "dropout", "late")


def test_an_over_budget_probe_peak_is_an_oom_failure_and_the_run_goes_on(assets, tmp_path):
    out = tmp_path / "oom"
    _run(out, ["emulation.backend=inproc", PREDICTED, "emulation.memory_limit_mb=1"])
    clients = pd.read_csv(out / "client_rounds.csv")
    assert (clients.outcome == "oom").all() and clients.cause.eq("oom").all()
    assert pd.read_csv(out / "rounds.csv")["participants"].iloc[1:].eq(0).all()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env=env)


def test_a_probe_that_fails_exits_2_naming_the_field(assets, tmp_path):
    """The probe's client crashes (its fit raises, in-process): one line naming the field, exit 2."""
    driver = ("import sys; from pathlib import Path; from testbed.sim import predicted; "
              f"predicted.costs_dir = lambda: Path({str(tmp_path / 'costs')!r}); "
              "import frameworks.fedllm as f; "
              "f.FedLLMClient.fit = lambda self, ins: (_ for _ in ()).throw(MemoryError('no room for the batch')); "
              "from testbed.cli.main import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", driver, "run", str(SMOKE), "--out", str(tmp_path / "run"),
                          "--set", PREDICTED, "--set", "emulation.backend=inproc"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 2, res.stderr[-2000:]
    line = [x for x in res.stderr.splitlines() if "emulation.compute: predicted" in x]
    assert line and "probe" in res.stderr and "no room for the batch" in res.stderr
    assert "Traceback" not in res.stderr


def test_replay_compute_is_refused_under_predicted(assets, tmp_path, measured_and_predicted):
    measured, _ = measured_and_predicted
    res = _cli("run", str(SMOKE), "--out", str(tmp_path / "run"), "--set", PREDICTED,
               "--replay-compute", str(measured))
    assert res.returncode == 2 and "--replay-compute replays measured compute" in res.stderr
    assert "Traceback" not in res.stderr


VALID = {"format": "testbed-costs/2", "key": {}, "precision": "fp32", "probe_clients": 2, "probe_host_s": 1.0,
         "calibration": {"threads": 1, "gemm_gflops_fp32": 50.0, "gemm_gflops_bf16": None,
                         "mem_bandwidth_gbps": 10.0, "measured_at": "2026-12-07T00:00:00+00:00",
                         "torch_version": "2.13.0", "cpu_model": "x", "seconds_spent": 1.0},
         "rounds": [{"round": 1, "aggregate_fixed_s": 0.01, "aggregate_per_update_s": 0.001, "metrics": ["train_loss"],
                     "steps": [{"step": "SendCost", "direction": "down", "kind": "adapter_down", "payload_bytes": 10},
                               {"step": "CallCost", "method": "fit", "peak_rss_bytes": 5,
                                "spans": [{"label": "train", "host_s": 0.5, "flops": 1e9, "bytes_moved": 1e6,
                                           "precision": "fp32"}]},
                               {"step": "ServerCost", "label": "ingest", "host_s": 0.1}]}]}


def test_a_cost_table_round_trips_and_bad_fields_are_named():
    table = CostTable.from_json(json.dumps(VALID), "t.json")
    assert CostTable.from_json(table.to_json(), "again") == table
    assert table.for_round(7).round == 1 and table.bytes_by_kind(1) == {"adapter_down": 10}
    assert table.for_round(1).aggregate_s(10) == pytest.approx(0.02)
    bad = json.loads(json.dumps(VALID))
    bad["rounds"][0]["steps"][1]["spans"][0]["host_s"] = -1
    with pytest.raises(CostTableError, match=r"t.json: rounds.0.steps.1.spans.0.host_s: expected a finite number"):
        CostTable.from_json(json.dumps(bad), "t.json")
    bad["rounds"][0]["steps"][1] = {"step": "os.system", "cmd": "true"}
    with pytest.raises(CostTableError, match=r"rounds.0.steps.1.step: expected one of"):
        CostTable.from_json(json.dumps(bad), "t.json")
    with pytest.raises(CostTableError, match="not JSON"):
        CostTable.from_json("{", "t.json")


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.sampled_from(["rounds", 0, "steps", 1, "spans", "calibration", "key", "host_s", "step",
                                      "payload_bytes", "direction", "round", "metrics"]), min_size=1, max_size=5),
       value=JSONISH)
def test_fuzzed_cost_tables_are_accepted_or_refused_by_field(path, value):
    doc = json.loads(json.dumps(VALID))
    node = doc
    for key in path[:-1]:
        nxt = node[key] if isinstance(node, dict) and key in node else (
            node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else None)
        if not isinstance(nxt, (dict, list)):
            break
        node = nxt
    last = path[-1]
    if isinstance(node, dict):
        node[str(last)] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    try:
        table = CostTable.from_json(json.dumps(value if path == ["key"] else doc, allow_nan=True), "f.json")
    except CostTableError as exc:
        assert str(exc).startswith("f.json: ")
        return
    for cost in table.rounds:
        assert cost.aggregate_s(3) >= 0 and math.isfinite(cost.aggregate_s(3))


def test_stress_sweeps_compute_like_any_other_key(assets, tmp_path):
    from testbed.sim.batch import stress
    from testbed.results.stress import parse_sweep

    table = stress(SMOKE, tmp_path / "grid", sweeps=[parse_sweep("emulation.compute=measured,predicted")],
                   overrides=["emulation.backend=inproc"], quiet=True)
    assert sorted(table["emulation.compute"]) == ["measured", "predicted"]
    predicted = table.set_index("emulation.compute").loc["predicted"]
    measured = table.set_index("emulation.compute").loc["measured"]
    assert math.isnan(predicted["final_accuracy"]) and not math.isnan(measured["final_accuracy"])
    assert predicted["bytes_up_per_client_round"] == measured["bytes_up_per_client_round"] > 0


def test_the_backend_answers_with_finished_futures_and_one_oom_text_per_budget():
    """Every client's answer is a finished future (result, done, callbacks, wait, as_completed as
    for any future); a call over a client's budget is an oom failure naming both sizes, its text
    made once per budget."""
    from concurrent.futures import as_completed, wait
    from types import SimpleNamespace

    from testbed.protocol import Failure, StepRes
    from testbed.sim.predicted import PredictedBackend

    table = CostTable.from_json(json.dumps(VALID), "t.json")
    clients = [SimpleNamespace(client_id=i, memory_budget_mb=mb) for i, mb in enumerate((1.0, 2**-20, 2**-20, 1e-6))]
    backend = PredictedBackend(table, clients, enforce_memory=True)
    ok, small, also_small, smaller = (backend.submit(c, 3, "fit", (1, 1)) for c in range(4))
    assert isinstance(ok.result(), StepRes) and ok.done() and not ok.running() and ok.exception() is None
    assert [s.host_s for s in ok.result().spans] == [0.5] and ok.result().peak_rss_bytes == 5
    assert backend.submit(0, 4, "fit", (1, 1)) is ok  # one answer shared by every client and round
    seen = []
    ok.add_done_callback(seen.append)
    assert seen == [ok] and set(as_completed([ok, small])) == {ok, small} and wait([ok, small]).not_done == set()
    assert ok._waiters == [] and small._waiters == []  # the waiters wait() and as_completed added are gone
    fails = [f.result() for f in (small, also_small, smaller)]
    assert all(isinstance(f, Failure) and f.cause == "oom" and f.round == 3 for f in fails)
    assert [f.client_id for f in fails] == [1, 2, 3] and [f.host_s for f in fails] == [0.5] * 3
    assert fails[0].detail == "predicted: fit peaks at 0 MB, over the 0 MB budget"
    assert fails[0].detail is fails[1].detail and fails[2].detail is not fails[0].detail
    killed = backend.submit(0, 3, "fit", (1, 1), kill=True).result()
    assert isinstance(killed, Failure) and killed.cause == "killed"
