"""`testbed stress`: sweeps form a grid, one run folder and one stress.csv row per point, with the
metrics of `compare`; bad sweeps are bad input; one real 2-point grid on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_compare import FAST, SMOKE, client, write_generative_run, write_run

import testbed.sim.batch
from testbed.cli.main import main
from testbed.config.scenario import Scenario
from testbed.results.compare import ALL_METRICS, CompareError
from testbed.results.stress import Sweep, grid, parse_sweep, point_dir_name


def test_parse_sweep():
    assert parse_sweep("framework.local_steps=1,2") == Sweep("framework.local_steps", ("1", "2"))
    assert parse_sweep("fleet.0.link= lte, 5g") == Sweep("fleet.0.link", ("lte", "5g"))
    for bad in ("framework.local_steps", "=1,2", "fleet.0.count=1,,2", "fleet.0.count=", "fleet.0.count=1,1"):
        with pytest.raises(CompareError):
            parse_sweep(bad)


def test_sweeps_form_a_grid_with_safe_folder_names():
    points = grid([parse_sweep("framework.local_steps=1,2"), parse_sweep("server.link.rate_mbps=10,100")])
    assert [point_dir_name(p) for p in points] == [
        "framework.local_steps=1,server.link.rate_mbps=10", "framework.local_steps=1,server.link.rate_mbps=100",
        "framework.local_steps=2,server.link.rate_mbps=10", "framework.local_steps=2,server.link.rate_mbps=100",
    ]
    assert point_dir_name([("fleet.0.link.trace_up", "traces/ATT LTE.up")]) == "fleet.0.link.trace_up=traces_ATT_LTE.up"
    with pytest.raises(CompareError, match="swept twice"):
        grid([parse_sweep("seed=1,2"), parse_sweep("seed=3")])


def fake_run_scenario(scenario: Scenario, out_dir: Path, **_: Any) -> dict[str, Any]:
    """Final accuracy 0.1 x local_steps; sim time 1000 / server rate; bytes = clients x 100."""
    if scenario.fleet[0].link == "5g":
        raise RuntimeError("no 5g today")
    final = 0.1 * scenario.framework.local_steps
    write_run(out_dir, [0.05, final], [0.0, 1000.0 / scenario.server.link.rate_mbps], [math.nan, 0.25],
              [client(up=100 * scenario.n_clients, device_s=0.5)])
    return {"status": "completed"}


def test_grid_runs_into_one_tidy_table(tmp_path, monkeypatch):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "stress"
    assert main(["stress", str(SMOKE), "--sweep", "framework.local_steps=1,2", "--sweep",
                 "server.link.rate_mbps=10,100", "--set", "fleet.0.count=2", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "stress.csv")
    assert list(table.columns[:2]) == ["framework.local_steps", "server.link.rate_mbps"]
    assert {*ALL_METRICS, "status", "target_accuracy", "run_dir"} <= set(table.columns)
    assert table[["framework.local_steps", "server.link.rate_mbps"]].values.tolist() == [[1, 10], [1, 100],
                                                                                         [2, 10], [2, 100]]
    assert table["final_accuracy"].tolist() == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert table["sim_wall_clock_s"].tolist() == pytest.approx([100.0, 10.0, 100.0, 10.0])
    assert (table["bytes_up_per_client_round"] == 400.0).all()  # the fixed --set reached every point (4 clients)
    assert (table["client_compute_s_per_round"] == 0.5).all() and (table["server_compute_s"] == 0.25).all()
    # default target over the whole grid: 0.9 x 0.2; only local_steps=2 reaches it, at round 1
    assert table["target_accuracy"].tolist() == pytest.approx([0.18] * 4)
    assert table["time_to_target_s"].isna().tolist() == [True, True, False, False]
    assert table["time_to_target_s"].iloc[2:].tolist() == pytest.approx([100.0, 10.0])
    for run_dir in table["run_dir"]:
        assert (Path(run_dir) / "rounds.csv").is_file() and Path(run_dir).parent == out


def test_link_class_and_fleet_count_sweeps(tmp_path, monkeypatch):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "stress"
    assert main(["stress", str(SMOKE), "--sweep", "fleet.0.link=lte,5g", "--sweep", "fleet.0.count=1,2",
                 "--target-accuracy", "0.15", "--out", str(out), "--quiet"]) == 1  # a failed point: exit 1
    table = pd.read_csv(out / "stress.csv")
    assert table[["fleet.0.link", "fleet.0.count"]].values.tolist() == [["lte", 1], ["lte", 2], ["5g", 1], ["5g", 2]]
    assert table["status"].tolist() == ["completed", "completed", "crashed", "crashed"]
    assert table["error"].iloc[2] == "RuntimeError: no 5g today"
    assert table["bytes_up_per_client_round"].iloc[:2].tolist() == [300.0, 400.0]  # 3 and 4 clients
    assert table["final_accuracy"].iloc[2:].isna().all()
    assert (table["target_accuracy"] == 0.15).all()
    assert (out / "fleet.0.link=5g,fleet.0.count=2" / "error.txt").is_file()


@pytest.mark.parametrize("args", [
    ["--sweep", "fleet.9.count=1,2"], ["--sweep", "fleet.0.link=lte,warp-drive"], ["--sweep", "framework.rounds"],
    ["--sweep", "seed=1,2", "--sweep", "seed=3"], ["--sweep", "seed=1", "--target-accuracy", "-0.1"],
])
def test_bad_sweeps_are_an_error_line_and_exit_2(tmp_path, capsys, args):
    assert main(["stress", str(SMOKE), "--out", str(tmp_path / "s"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_missing_scenario_is_bad_input(tmp_path, capsys):
    assert main(["stress", str(tmp_path / "nope.yaml"), "--sweep", "seed=1,2", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_stress_on_the_tiny_model(assets, tmp_path):
    out = tmp_path / "stress"
    overrides = [arg for kv in FAST for arg in ("--set", kv)]
    assert main(["stress", str(SMOKE), "--sweep", "server.link.rate_mbps=1,100", "--out", str(out), "--quiet",
                 *overrides]) == 0
    table = pd.read_csv(out / "stress.csv")
    assert table["server.link.rate_mbps"].tolist() == [1, 100]
    assert (table["status"] == "completed").all()
    finite = ["final_accuracy", "sim_wall_clock_s", "bytes_up_per_client_round", "bytes_down_per_client_round",
              "client_compute_s_per_round", "client_peak_mem_mb", "server_compute_s", "failures", "host_s"]
    assert np.isfinite(table[finite].to_numpy(dtype=float)).all()
    # same seed, same bytes; the slower server link only adds simulated time
    assert table["bytes_up_per_client_round"].nunique() == 1
    assert table["final_accuracy"].nunique() == 1
    assert table["sim_wall_clock_s"].iloc[0] > table["sim_wall_clock_s"].iloc[1]
    assert (out / "server.link.rate_mbps=1" / "rounds.csv").is_file()


def fake_task_run(scenario: Scenario, out_dir: Path, **_: Any) -> dict[str, Any]:
    """Classification: final accuracy 0.1 x local_steps; language modelling: final perplexity
    40 / local_steps (50 at 10 s, before it), 100 before training; the run's end at 20 s."""
    steps = scenario.framework.local_steps
    if scenario.task.kind == "classification":
        write_run(out_dir, [0.05, 0.05 * steps, 0.1 * steps], [0.0, 10.0, 20.0], [math.nan, 0.25, 0.25], [client()])
    else:
        write_generative_run(out_dir, [100.0, 50.0, 40.0 / steps], [0.0, 10.0, 20.0], task=scenario.task.kind)
    return {"status": "completed"}


def test_a_grid_over_task_kinds_times_each_run_by_its_own_metric(tmp_path, monkeypatch):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_task_run)
    out = tmp_path / "stress"
    assert main(["stress", str(SMOKE), "--sweep", "task.kind=classification,language_modeling", "--sweep",
                 "framework.local_steps=1,2", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "stress.csv")
    assert table["target_metric"].tolist() == ["accuracy", "accuracy", "perplexity", "perplexity"]
    # accuracy: 0.9 x 0.2 over the grid; perplexity: 1.1 x 20 (40 / 2)
    assert table["target_value"].tolist() == pytest.approx([0.18, 0.18, 22.0, 22.0])
    assert table["target_accuracy"].iloc[:2].tolist() == pytest.approx([0.18, 0.18])
    assert table["target_accuracy"].iloc[2:].isna().all()
    assert math.isnan(table["time_to_target_s"].iloc[0]) and table["time_to_target_s"].iloc[1] == 20.0
    assert math.isnan(table["time_to_target_s"].iloc[2]) and table["time_to_target_s"].iloc[3] == 20.0
    assert table["final_perplexity"].iloc[2:].tolist() == [40.0, 20.0]
    assert table["final_perplexity"].iloc[:2].isna().all() and table["final_accuracy"].iloc[2:].isna().all()
    assert table["final_rouge_l"].isna().all()  # no generation


def test_stress_target_perplexity(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_task_run)
    out = tmp_path / "stress"
    assert main(["stress", str(SMOKE), "--set", "task.kind=language_modeling", "--sweep", "framework.local_steps=1,2",
                 "--target", "perplexity=50", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "stress.csv")
    assert table["time_to_target_s"].tolist() == [10.0, 10.0]  # 50 <= 50 at 10 s, before the final value
    assert (table["target_value"] == 50.0).all() and table["target_accuracy"].isna().all()
    assert "time to target: the first round with perplexity <= 50" in capsys.readouterr().out


@pytest.mark.parametrize("args, named", [
    (["--target", "bogus=1"], "--target bogus=1"), (["--target", "perplexity=abc"], "--target perplexity=abc"),
    (["--target", "rouge_l=0.3", "--target-accuracy", "0.5"], "--target rouge_l=0.3 and --target-accuracy"),
])
def test_bad_targets_are_an_error_line_and_exit_2(tmp_path, capsys, args, named):
    assert main(["stress", str(SMOKE), "--sweep", "seed=1,2", "--out", str(tmp_path / "s"), *args]) == 2
    assert capsys.readouterr().err.startswith(f"error: {named}")
    assert not (tmp_path / "s").exists()


def test_json_prints_the_grid_as_one_document_and_quiet_nothing_else(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "stress"
    assert main(["stress", str(SMOKE), "--sweep", "framework.local_steps=1,2", "--out", str(out), "--quiet",
                 "--json"]) == 0
    shown = capsys.readouterr()
    assert shown.err == "" and shown.out.count("\n") == 1
    document = json.loads(shown.out)
    assert document["out_dir"] == str(out)
    assert [row["framework.local_steps"] for row in document["rows"]] == [1, 2]
    assert [row["final_accuracy"] for row in document["rows"]] == pytest.approx([0.1, 0.2])
    assert document["rows"][0]["time_to_target_s"] is None  # NaN in stress.csv: null here
    assert all(row["status"] == "completed" for row in document["rows"])
