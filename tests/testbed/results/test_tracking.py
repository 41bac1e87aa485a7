"""output.tracking: mlflow: a run, and each run of a compare, read back with MLflow's own client;
a store that refuses, or no MLflow at all, leaves the run folder whole."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from testbed.cli.main import main
from testbed.config.output import OutputConfig
from testbed.config.scenario import load_scenario
from testbed.results.tracking import flat_params, round_metrics, store_of, track_run

SMOKE = Path(__file__).resolve().parents[3] / "scenarios" / "smoke.yaml"
FAST = ["emulation.backend=inproc", "framework.local_steps=1"]
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None or
                                  importlib.util.find_spec("sqlalchemy") is None,
                                  reason="MLflow is not installed (pip install 'fedge-testbed[tracking]')")


def _sets(*assignments: str) -> list[str]:
    return [a for s in assignments for a in ("--set", s)]


def _tracked(out: Path, store: Path) -> str:
    return f"output={{dir: {out}, tracking: mlflow, tracking_uri: {store}}}"


def _client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


# --- what is logged, without MLflow ----------------------------------------------------------------


def test_the_scenario_flattens_to_dotted_parameters():
    dump = {"name": "s", "framework": {"name": "kd", "lora": {"r": 4, "targets": ["q_proj", "v_proj"]}},
            "fleet": [{"device": "pixel-7", "count": 2}, {"device": "jetson-nano", "count": 1}],
            "availability": {"path": None, "enabled": False}, "seed": 0}
    assert flat_params(dump) == {
        "name": "s", "framework.name": "kd", "framework.lora.r": "4", "framework.lora.targets": '["q_proj", "v_proj"]',
        "fleet.0.device": "pixel-7", "fleet.0.count": "2", "fleet.1.device": "jetson-nano", "fleet.1.count": "1",
        "availability.path": "null", "availability.enabled": "false", "seed": "0"}
    assert len(flat_params({"x": "a" * 7000})["x"]) == 6000  # MLflow's limit on a value


def test_rounds_become_metrics_per_round_at_simulated_time(tmp_path):
    rounds = tmp_path / "rounds.csv"
    rounds.write_text("round,sim_end_s,selected,accuracy,train_loss\n"
                      "0,0.0,,0.25,\n"
                      "1,12.5,1 2,0.5,2.75\n"
                      "2,30.0004,0 1,nan,1.5\n")
    assert round_metrics(rounds) == [
        ("sim_end_s", 0.0, 0, 0), ("accuracy", 0.25, 0, 0),
        ("sim_end_s", 12.5, 12500, 1), ("accuracy", 0.5, 12500, 1), ("train_loss", 2.75, 12500, 1),
        ("sim_end_s", 30.0004, 30000, 2), ("train_loss", 1.5, 30000, 2)]


def test_the_store_is_a_folder_here_or_an_mlflow_uri(tmp_path):
    store = store_of(OutputConfig(dir="r", tracking="mlflow"), cwd=tmp_path)
    assert store.uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert store.artifacts == (tmp_path / "mlruns" / "artifacts").as_uri()
    store = store_of(OutputConfig(dir="r", tracking="mlflow", tracking_uri="../t"), cwd=tmp_path / "a")
    assert store.uri == f"sqlite:///{tmp_path / 't' / 'mlflow.db'}"
    assert store_of(OutputConfig(dir="r", tracking="mlflow", tracking_uri="http://127.0.0.1:5000")).uri == \
        "http://127.0.0.1:5000"


# --- a run that cannot be tracked stays whole ------------------------------------------------------


def _fake_run(out: Path) -> dict:
    out.mkdir(parents=True)
    (out / "rounds.csv").write_text("round,sim_end_s,accuracy\n0,0.0,0.25\n1,3.5,0.5\n")
    summary = {"status": "completed", "framework": "fedllm", "host_wall_s": 4.0}
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def test_without_mlflow_the_run_folder_stays_and_says_which_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    out = tmp_path / "run"
    summary = _fake_run(out)
    scenario = load_scenario(SMOKE, [_tracked(out, tmp_path / "mlruns")])
    console = Console(file=io.StringIO(), width=300)
    record = track_run(scenario, out, summary, console)
    expected = ("MissingExtra: output.tracking: mlflow needs the 'tracking' extra (mlflow is not installed): "
                "pip install 'fedge-testbed[tracking]'")
    assert record == {"kind": "mlflow", "error": expected}
    assert json.loads((out / "summary.json").read_text())["tracking"] == record
    assert (out / "rounds.csv").read_text() == "round,sim_end_s,accuracy\n0,0.0,0.25\n1,3.5,0.5\n"
    said = console.file.getvalue()
    assert "tracking failed" in said and expected in said and f"the run folder {out} is complete" in said
    assert not (tmp_path / "mlruns").exists()


@needs_mlflow
def test_an_unwritable_store_leaves_the_run_whole(tmp_path):
    out = tmp_path / "run"
    summary = _fake_run(out)
    (tmp_path / "a-file").write_text("not a folder")
    scenario = load_scenario(SMOKE, [_tracked(out, tmp_path / "a-file" / "mlruns")])
    console = Console(file=io.StringIO(), width=300)
    record = track_run(scenario, out, summary, console)
    assert set(record) == {"kind", "error"} and record["error"]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert "the run folder" in console.file.getvalue() and "is complete" in console.file.getvalue()


# --- real runs, read back with MLflow's client -----------------------------------------------------


@needs_mlflow
def test_a_tracked_run_reads_back_from_mlflow(tmp_path, assets):
    out, store = tmp_path / "run", tmp_path / "mlruns"
    assert main(["run", str(SMOKE), "--quiet", *_sets(*FAST, "framework.rounds=2", _tracked(out, store))]) == 0
    summary = json.loads((out / "summary.json").read_text())
    run_id = summary["tracking"]["run_id"]
    assert summary["tracking"]["uri"] == f"sqlite:///{store / 'mlflow.db'}"
    client = _client(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "smoke"
    params = run.data.params
    assert (params["framework.name"], params["framework.rounds"], params["fleet.0.device"], params["model"]) == (
        "fedllm", "2", "pixel-7", "tiny-llama")
    assert params["framework.lora.targets"] == '["q_proj", "v_proj"]' and params["output.dir"] == str(out)
    with (out / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    history = sorted(client.get_metric_history(run_id, "accuracy"), key=lambda m: m.step)
    assert len(rows) == 3 and len(history) == 3  # round 0 (before training) and the 2 rounds
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == [float(r["accuracy"]) for r in rows]
    assert [m.timestamp for m in history] == [int(round(float(r["sim_end_s"]) * 1000)) for r in rows]
    assert len(client.get_metric_history(run_id, "train_loss")) == 2  # none before training
    assert run.data.metrics["sim_wall_clock_s"] == pytest.approx(summary["sim_wall_clock_s"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"rounds.csv", "summary.json", "scenario.yaml", "events.csv", "client_rounds.csv"} <= artifacts
    assert not {".lock", ".owner.json"} & artifacts
    local = client.download_artifacts(run_id, "rounds.csv", str(tmp_path / "back"))
    assert Path(local).read_bytes() == (out / "rounds.csv").read_bytes()


@needs_mlflow
def test_compare_logs_one_run_per_framework(tmp_path, assets):
    out, store = tmp_path / "cmp", tmp_path / "mlruns"
    code = main(["compare", str(SMOKE), "--frameworks", "fedllm,split", "--out", str(out), "--quiet",
                 *_sets(*FAST, "framework.rounds=1", _tracked(tmp_path / "unused", store))])
    assert code == 0
    client = _client(store)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["fedllm", "split"]
    for run in runs:
        name = run.info.run_name
        assert run.data.params["framework.name"] == name and run.info.status == "FINISHED"
        assert run.data.tags["testbed.run_dir"] == str(out / name)
        assert json.loads((out / name / "summary.json").read_text())["tracking"]["run_id"] == run.info.run_id
        assert len(client.get_metric_history(run.info.run_id, "accuracy")) == 2
    assert not (tmp_path / "unused").exists()  # compare's runs go under --out
