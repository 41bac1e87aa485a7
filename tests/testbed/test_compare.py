"""`testbed compare`: metrics read back from run folders, seeds' confidence intervals, failed
runs recorded, bad input rejected, and one real comparison on the tiny model."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import testbed.sim.batch
from testbed.cli.main import main
from testbed.config.scenario import Scenario
from testbed.results.compare import (
    ALL_METRICS,
    METRICS,
    CompareError,
    check_target,
    format_number,
    mean_ci95,
    run_metrics,
    student_t_quantile,
    student_t_two_sided_mass,
    time_to_target_s,
)
from testbed.results.metrics import (
    GENERATIVE_METRICS,
    TASK_METRICS,
    Target,
    run_headline_metric,
    task_metrics,
)

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
FAST = ["emulation.backend=inproc", "framework.rounds=1", "framework.local_steps=1"]


def write_run(run_dir: Path, accuracies: list[float], sim_end_s: list[float], server_s: list[float],
              clients: list[dict[str, Any]], host_s: float = 5.0, server_steps_s: tuple[float, ...] = (),
              **extra_round_columns: list[float]) -> None:
    """A fake run folder: rounds.csv (round 0 first), client_rounds.csv, events.csv (one
    aggregate event per round with server work, plus `server_steps_s` server_compute events)
    and summary.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rounds = pd.DataFrame({"round": range(len(accuracies)), "sim_end_s": sim_end_s, "accuracy": accuracies,
                           "server_compute_s": server_s, **extra_round_columns})
    rounds.to_csv(run_dir / "rounds.csv", index=False)
    pd.DataFrame(clients).to_csv(run_dir / "client_rounds.csv", index=False)
    events = [{"kind": "aggregate", "device_s": s} for s in server_s if not math.isnan(s)]
    events += [{"kind": "server_compute", "device_s": s} for s in server_steps_s]
    events.append({"kind": "compute", "device_s": 99.0})  # client work: not the server's
    pd.DataFrame(events).to_csv(run_dir / "events.csv", index=False)
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "host_wall_s": host_s}))


def client(outcome: str = "ok", up: int = 100, down: int = 1000, device_s: float = 2.0, peak_mb: float = 500.0):
    return {"round": 1, "client": 0, "outcome": outcome, "bytes_up": up, "bytes_down": down,
            "device_compute_s": device_s, "peak_rss_mb": peak_mb}


# -- one run folder -> one row -------------------------------------------------------------------
def test_run_metrics_reads_every_metric(tmp_path):
    write_run(tmp_path, accuracies=[0.2, 0.5, 0.6], sim_end_s=[0.0, 10.0, 25.0], server_s=[math.nan, 1.5, 2.5],
              clients=[client(up=100, down=1000, device_s=2.0, peak_mb=500),
                       client(up=300, down=3000, device_s=4.0, peak_mb=600),
                       client("failed", up=0, down=1000, device_s=9.0, peak_mb=900)],
              host_s=42.0, server_steps_s=(0.25, 0.25), client_model_mb=[math.nan, 12.0, 12.5],
              student_accuracy=[0.1, 0.3, 0.4])
    row = run_metrics(tmp_path, Target("accuracy", 0.45))
    assert row == {
        "final_accuracy": 0.6, "time_to_target_s": 10.0, "sim_wall_clock_s": 25.0,
        "bytes_up_per_client_round": 200.0, "bytes_down_per_client_round": 2000.0,  # ok client-rounds only
        "client_compute_s_per_round": 3.0, "client_peak_mem_mb": 900.0,  # peak over all, failed included
        "server_compute_s": 4.5, "failures": 1.0, "student_accuracy": 0.4, "client_model_mb": 12.5, "host_s": 42.0,
    }
    assert set(row) == set(ALL_METRICS)


def test_run_metrics_without_framework_extras(tmp_path):
    write_run(tmp_path, [0.2, 0.3], [0.0, 4.0], [math.nan, 0.5], [client()])
    row = run_metrics(tmp_path, Target("accuracy", 0.9))
    assert math.isnan(row["student_accuracy"]) and math.isnan(row["client_model_mb"])
    assert math.isnan(row["time_to_target_s"])


def test_time_to_target_is_the_first_round_reaching_it():
    rounds = pd.DataFrame({"round": [0, 1, 2, 3], "sim_end_s": [0.0, 3.0, 7.0, 12.0],
                           "accuracy": [0.25, math.nan, 0.5, 0.4]})
    assert time_to_target_s(rounds, 0.5) == 7.0  # a round not evaluated (NaN) never counts
    assert time_to_target_s(rounds, 0.45) == 7.0  # first reach, not the last
    assert time_to_target_s(rounds, 0.2) == 0.0  # the initial model already reaches it
    assert math.isnan(time_to_target_s(rounds, 0.51))
    assert math.isnan(time_to_target_s(rounds, math.nan))


# -- Student t ------------------------------------------------------------------------------------
@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8, 13, 30])
def test_t_distribution_matches_the_integrated_density(df):
    t = np.linspace(-4.0, 4.0, 400_001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(t * t / df))
    integral = float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(t)))
    assert student_t_two_sided_mass(4.0, df) == pytest.approx(integral, abs=1e-9)


def test_t_quantiles_against_closed_forms():
    # df 1 (Cauchy): P(|T| <= t) = 2 atan(t) / pi; df 2: P(|T| <= t) = t / sqrt(2 + t^2).
    assert student_t_quantile(0.975, 1) == pytest.approx(math.tan(0.95 * math.pi / 2), rel=1e-12)
    assert student_t_quantile(0.975, 2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), rel=1e-12)
    for df in (3, 7, 29):
        assert student_t_two_sided_mass(student_t_quantile(0.975, df), df) == pytest.approx(0.95, abs=1e-12)
    normal = statistics.NormalDist().inv_cdf(0.975)
    assert normal < student_t_quantile(0.975, 500) < normal + 0.01  # t -> normal as df grows


def test_mean_ci95_by_hand():
    t2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # df 2, see above
    mean, ci = mean_ci95([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and ci == pytest.approx(t2 * 0.1 / math.sqrt(3))
    assert mean_ci95([0.5, math.nan, 0.7]) == (pytest.approx(0.6), pytest.approx(math.tan(0.95 * math.pi / 2)
                                                                                  * math.sqrt(0.02) / math.sqrt(2)))
    mean, ci = mean_ci95([3.0])
    assert mean == 3.0 and math.isnan(ci)
    assert all(math.isnan(v) for v in mean_ci95([math.nan]))


def test_format_number_rounds_without_scientific_notation():
    assert [format_number(v) for v in (0.17512, 16328.0, 0.000857, 3.0, 0.0, math.nan, 1234.56)] == \
        ["0.175", "16328", "0.000857", "3", "0", "–", "1235"]


# -- the command, with run_scenario faked -----------------------------------------------------------
FAKE_FINAL = {("fedllm", 0): 0.5, ("fedllm", 1): 0.6, ("fedllm", 2): 0.7,
              ("split", 0): 0.4, ("split", 1): 0.8, ("split", 2): 0.3}


def fake_run_scenario(scenario: Scenario, out_dir: Path, **_: Any) -> dict[str, Any]:
    """Round 1 at 0.8 x the final accuracy (sim 10 s), round 2 final (sim 20 s x (seed + 1))."""
    name, seed = scenario.framework.name, scenario.seed
    if name == "kd":
        raise RuntimeError("teacher exploded")
    final = FAKE_FINAL[(name, seed)]
    write_run(out_dir, [0.1, 0.8 * final, final], [0.0, 10.0, 20.0 * (seed + 1)], [math.nan, 1.0, 1.0],
              [client(up=100 * (seed + 1))])
    return {"status": "completed"}


def test_compare_seeds_mean_and_ci_by_hand(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "cmp"
    assert main(["compare", str(SMOKE), "--frameworks", "fedllm,split", "--seeds", "0,1,2", "--out", str(out),
                 "--quiet"]) == 0
    for fw in ("fedllm", "split"):
        for seed in (0, 1, 2):
            assert (out / fw / f"seed{seed}" / "rounds.csv").is_file()
    table = pd.read_csv(out / "comparison.csv").set_index("framework")
    for metric in METRICS:
        assert f"{metric}_mean" in table and f"{metric}_ci95" in table
    t2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    fedllm, split = table.loc["fedllm"], table.loc["split"]
    assert fedllm["n_seeds"] == 3 and fedllm["status"] == "completed"
    assert fedllm["final_accuracy_mean"] == pytest.approx(0.6)
    assert fedllm["final_accuracy_ci95"] == pytest.approx(t2 * statistics.stdev([0.5, 0.6, 0.7]) / math.sqrt(3))
    assert split["final_accuracy_ci95"] == pytest.approx(t2 * statistics.stdev([0.4, 0.8, 0.3]) / math.sqrt(3))
    assert fedllm["sim_wall_clock_s_mean"] == pytest.approx(40.0)
    assert fedllm["sim_wall_clock_s_ci95"] == pytest.approx(t2 * 20.0 / math.sqrt(3))
    assert fedllm["bytes_up_per_client_round_mean"] == pytest.approx(200.0)
    assert fedllm["server_compute_s_mean"] == pytest.approx(2.0) and fedllm["server_compute_s_ci95"] == 0.0
    # per-seed default targets: 0.9 x max(fedllm, split): seed 0 0.45, seed 1 0.72, seed 2 0.63.
    runs = pd.read_csv(out / "comparison_runs.csv").set_index(["framework", "seed"])
    assert runs["target_accuracy"].xs(1, level="seed").tolist() == pytest.approx([0.72, 0.72])
    # fedllm reaches it in round 2 with seeds 0 (0.5) and 2 (0.7), never with seed 1 (0.6 < 0.72).
    assert runs.loc[("fedllm", 0), "time_to_target_s"] == 20.0
    assert math.isnan(runs.loc[("fedllm", 1), "time_to_target_s"])
    assert runs.loc[("fedllm", 2), "time_to_target_s"] == 60.0
    assert fedllm["targets_reached"] == 2
    assert fedllm["time_to_target_s_mean"] == pytest.approx(40.0)  # over the seeds that reached it
    assert runs.loc[("split", 1), "time_to_target_s"] == 40.0 and split["targets_reached"] == 1
    markdown = (out / "comparison.md").read_text()
    assert "| framework | final accuracy |" in markdown and "0.600 ± 0.248" in markdown
    assert "0.600 ± 0.248" in capsys.readouterr().out


def test_a_crashed_framework_is_recorded_and_the_others_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "cmp"
    assert main(["compare", str(SMOKE), "--out", str(out), "--quiet", "--set", "seed=1"]) == 1
    table = pd.read_csv(out / "comparison.csv").set_index("framework")
    assert list(table.index) == ["fedllm", "kd", "split"]
    assert table.loc["kd", "status"] == "crashed"
    assert table.loc["kd", "error"] == "RuntimeError: teacher exploded"
    assert table.loc["kd", list(METRICS)].isna().all()
    assert "teacher exploded" in (out / "kd" / "error.txt").read_text()
    assert (table.loc[["fedllm", "split"], "status"] == "completed").all()
    assert table.loc["split", "final_accuracy"] == 0.8
    assert table.loc["fedllm", "target_accuracy"] == pytest.approx(0.72)
    assert "teacher exploded" in capsys.readouterr().err


@pytest.mark.parametrize("args", [
    ["--frameworks", "fedllm,fedsgd"], ["--frameworks", "fedllm,,kd"], ["--frameworks", "kd,kd"],
    ["--seeds", "0,x"], ["--seeds", ""], ["--seeds", "1,1"], ["--seeds", "-1"], ["--target-accuracy", "1.5"],
    ["--set", "framework.rounds=0"], ["--set", "nonsense"],
])
def test_bad_input_is_an_error_line_and_exit_2(tmp_path, capsys, args):
    assert main(["compare", str(SMOKE), "--out", str(tmp_path / "cmp"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "cmp").exists()


def test_missing_scenario_is_bad_input(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "cmp")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# -- the real thing ------------------------------------------------------------------------------
def test_compare_on_the_tiny_model(assets, tmp_path):
    out = tmp_path / "cmp"
    overrides = [arg for kv in FAST for arg in ("--set", kv)]
    assert main(["compare", str(SMOKE), "--frameworks", "fedllm,kd,split", "--out", str(out), "--quiet",
                 *overrides]) == 0
    table = pd.read_csv(out / "comparison.csv").set_index("framework")
    assert list(table.index) == ["fedllm", "kd", "split"]
    for column in (*ALL_METRICS, "target_accuracy", "status", "error", "run_dir"):
        assert column in table, column
    assert (table["status"] == "completed").all()
    must_be_finite = ["final_accuracy", "sim_wall_clock_s", "bytes_up_per_client_round",
                      "bytes_down_per_client_round", "client_compute_s_per_round", "client_peak_mem_mb",
                      "server_compute_s", "failures", "client_model_mb", "host_s", "target_accuracy"]
    assert np.isfinite(table[must_be_finite].to_numpy(dtype=float)).all()
    assert (table[["sim_wall_clock_s", "bytes_up_per_client_round", "client_compute_s_per_round",
                   "client_peak_mem_mb", "host_s"]] > 0).all().all()
    assert (table["failures"] == 0).all()
    assert table.loc["fedllm", "bytes_down_per_client_round"] > 0 and table.loc["split", "server_compute_s"] > 0
    assert np.isfinite(table.loc["kd", "student_accuracy"])
    assert table["target_accuracy"].iloc[0] == pytest.approx(0.9 * table["final_accuracy"].max())
    best = table["final_accuracy"].idxmax()
    assert 0 <= table.loc[best, "time_to_target_s"] <= table.loc[best, "sim_wall_clock_s"]
    for fw in table.index:
        assert (out / fw / "rounds.csv").is_file()
        assert f"| {fw} |" in (out / "comparison.md").read_text()


def test_compare_into_a_folder_of_runs_needs_resume_or_overwrite(tmp_path, monkeypatch, capsys):
    calls: list[dict[str, Any]] = []

    def recording_run(scenario: Scenario, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
        calls.append({"framework": scenario.framework.name, **kwargs})
        return fake_run_scenario(scenario, out_dir)

    monkeypatch.setattr(testbed.sim.batch, "run_scenario", recording_run)
    out = tmp_path / "cmp"
    args = ["compare", str(SMOKE), "--frameworks", "fedllm,split", "--out", str(out), "--quiet"]
    assert main(args) == 0
    (out / "fedllm" / "summary.json").write_text('{"status": "completed"}')
    calls.clear()
    assert main(args) == 2  # the runs of before would be mixed with new ones
    assert "hold runs already; pass --resume" in " ".join(capsys.readouterr().err.split())
    assert calls == []
    assert main([*args, "--resume"]) == 0
    assert [(c["framework"], c["resume"], c["overwrite"]) for c in calls] == [("fedllm", True, False),
                                                                              ("split", True, False)]


def test_compare_checks_each_planned_run_like_run_does(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    code = main(["compare", str(SMOKE), "--frameworks", "fedllm,split", "--out", str(tmp_path / "cmp"),
                 "--set", "framework.lora.targets=[no_such_proj]", "--quiet"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "framework.lora.targets" in err and "no_such_proj" in err
    assert not (tmp_path / "cmp").exists()


# -- generative tasks: perplexity (lower is better), ROUGE-L, exact match ---------------------------
def write_generative_run(run_dir: Path, perplexity: list[float], sim_end_s: list[float],
                         rouge_l: list[float] | None = None, exact_match: list[float] | None = None,
                         task: str | None = "instruction", first_round: int = 0) -> None:
    """A fake run folder of a generative task: rounds.csv with an empty accuracy column,
    eval_loss = log(perplexity) and, when given, rouge_l / exact_match; summary.json's `task`
    (None: not recorded, the kind then comes from the rounds.csv columns)."""
    write_run(run_dir, [math.nan] * len(perplexity), sim_end_s, [math.nan] + [1.0] * (len(perplexity) - 1),
              [client()], eval_loss=[math.log(p) for p in perplexity], perplexity=perplexity,
              **({"rouge_l": rouge_l} if rouge_l else {}), **({"exact_match": exact_match} if exact_match else {}))
    if first_round:
        rounds = pd.read_csv(run_dir / "rounds.csv")
        rounds.assign(round=rounds["round"] + first_round).to_csv(run_dir / "rounds.csv", index=False)
    if task is not None:
        summary = json.loads((run_dir / "summary.json").read_text())
        (run_dir / "summary.json").write_text(json.dumps({**summary, "task": task}))


def test_time_to_target_of_a_lower_is_better_metric_is_the_first_row_at_or_below_it():
    rounds = pd.DataFrame({"round": [0, 1, 2, 3, 4], "sim_end_s": [0.0, 10.0, 20.0, 30.0, 40.0],
                           "perplexity": [80.0, 30.0, 19.0, math.nan, 18.0]})
    assert time_to_target_s(rounds, 20.0, "perplexity") == 20.0  # 19 <= 20 first, in round 2
    assert time_to_target_s(rounds, 19.0, "perplexity") == 20.0  # equal counts
    assert time_to_target_s(rounds, 18.5, "perplexity") == 40.0
    assert time_to_target_s(rounds, 80.0, "perplexity") == 0.0  # the initial model already reaches it
    assert math.isnan(time_to_target_s(rounds, 17.9, "perplexity"))
    assert math.isnan(time_to_target_s(rounds, 0.5))  # no accuracy column: never reached


def test_run_metrics_of_a_generative_run(tmp_path):
    write_generative_run(tmp_path, perplexity=[200.0, 21.0, 18.0], sim_end_s=[0.0, 10.0, 20.0],
                         rouge_l=[0.05, 0.2, 0.4], exact_match=[0.0, 0.1, 0.25])
    row = run_metrics(tmp_path, Target("perplexity", 20.0))
    assert math.isnan(row["final_accuracy"])
    assert {k: row[k] for k in GENERATIVE_METRICS} == {
        "final_perplexity": 18.0, "final_rouge_l": 0.4, "final_exact_match": 0.25,
        "initial_perplexity": 200.0, "initial_rouge_l": 0.05}
    assert row["time_to_target_s"] == 20.0 and row["sim_wall_clock_s"] == 20.0
    assert set(row) == set(ALL_METRICS) | set(GENERATIVE_METRICS)
    assert run_metrics(tmp_path, Target("rouge_l", 0.2))["time_to_target_s"] == 10.0


def test_a_generative_run_without_generation_or_round_0_has_nans_there(tmp_path):
    write_generative_run(tmp_path, perplexity=[40.0, 30.0], sim_end_s=[10.0, 20.0], task=None, first_round=1)
    row = run_metrics(tmp_path, Target("perplexity", 35.0))  # kind from the perplexity column
    assert row["final_perplexity"] == 30.0 and row["time_to_target_s"] == 20.0
    for key in ("final_rouge_l", "final_exact_match", "initial_perplexity", "initial_rouge_l"):
        assert math.isnan(row[key]), key


def test_headline_metric_from_summary_or_rounds_columns(tmp_path):
    write_generative_run(tmp_path / "gen", [50.0, 20.0], [0.0, 5.0], task=None)
    write_generative_run(tmp_path / "lm", [50.0, 20.0], [0.0, 5.0], task="language_modeling")
    write_run(tmp_path / "cls", [0.2, 0.5], [0.0, 5.0], [math.nan, 1.0], [client()])
    assert [run_headline_metric(tmp_path / d) for d in ("gen", "lm", "cls")] == ["perplexity", "perplexity",
                                                                               "accuracy"]
    assert run_headline_metric(tmp_path / "missing") == "accuracy"
    assert task_metrics(pd.read_csv(tmp_path / "gen" / "rounds.csv")) == ("perplexity", "eval_loss")
    assert task_metrics(pd.read_csv(tmp_path / "cls" / "rounds.csv")) == ("accuracy",)


def test_default_targets_by_direction():
    assert TASK_METRICS["perplexity"].default_target([25.0, 18.0, math.nan]) == pytest.approx(19.8)  # 1.1 x lowest
    assert TASK_METRICS["accuracy"].default_target([0.5, 0.8]) == pytest.approx(0.72)  # 0.9 x highest
    assert TASK_METRICS["rouge_l"].default_target([0.4, 0.25]) == pytest.approx(0.36)
    assert math.isnan(TASK_METRICS["perplexity"].default_target([math.nan]))


def test_check_target_parses_metric_equals_value():
    assert check_target(target="perplexity=20") == Target("perplexity", 20.0)
    assert check_target(target=" rouge_l = 0.3") == Target("rouge_l", 0.3)
    assert check_target(target="accuracy=0.8") == check_target(0.8) == Target("accuracy", 0.8)
    assert check_target() is None


@pytest.mark.parametrize("accuracy, target, message", [
    (None, "bogus=1", "--target bogus=1: unknown metric 'bogus'; one of accuracy, perplexity, rouge_l"),
    (None, "perplexity=abc", "--target perplexity=abc: 'abc' is not a number"),
    (None, "perplexity", "--target perplexity: expected METRIC=VALUE"),
    (None, "perplexity=0.5", "--target perplexity=0.5: perplexity must be a number at least 1"),
    (None, "perplexity=nan", "--target perplexity=nan: perplexity must be a number at least 1"),
    (None, "rouge_l=1.5", "--target rouge_l=1.5: rouge_l must be a number between 0 and 1"),
    (1.5, None, "--target-accuracy 1.5: must be between 0 and 1"),  # as before --target
    (0.5, "perplexity=20", "--target perplexity=20 and --target-accuracy 0.5: give one of them"),
])
def test_bad_targets_name_the_option(accuracy, target, message):
    with pytest.raises(CompareError) as caught:
        check_target(accuracy, target)
    assert str(caught.value).startswith(message)


FAKE_PPL = {"fedllm": (18.0, 0.4), "split": (25.0, 0.25)}  # final perplexity at seed 0, final ROUGE-L


def fake_generative_scenario(scenario: Scenario, out_dir: Path, **_: Any) -> dict[str, Any]:
    """Perplexity 200 before training (ROUGE-L 0.05), final + 3 at 10 s (ROUGE-L 0.2 / 0.3), final
    (final perplexity + seed) at 20 s."""
    final, rouge = FAKE_PPL[scenario.framework.name]
    final += scenario.seed
    write_generative_run(out_dir, [200.0, final + 3, final], [0.0, 10.0, 20.0],
                         rouge_l=[0.05, 0.2 if rouge > 0.3 else 0.3, rouge], exact_match=[0.0, 0.05, 0.1])
    return {"status": "completed"}


def _compare(tmp_path, monkeypatch, *args: str) -> tuple[int, pd.DataFrame, Path]:
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_generative_scenario)
    out = tmp_path / "cmp"
    code = main(["compare", str(SMOKE), "--frameworks", "fedllm,split", "--out", str(out), "--quiet", *args])
    return code, pd.read_csv(out / "comparison.csv").set_index("framework"), out


def test_compare_generative_default_target_is_1_1_x_the_lowest_final_perplexity(tmp_path, monkeypatch, capsys):
    code, table, out = _compare(tmp_path, monkeypatch)
    assert code == 0
    assert table["target_metric"].tolist() == ["perplexity", "perplexity"]
    assert table["target_value"].tolist() == pytest.approx([19.8, 19.8])  # 1.1 x 18
    assert table["target_accuracy"].isna().all() and table["final_accuracy"].isna().all()
    assert table.loc["fedllm", "time_to_target_s"] == 20.0  # 18 <= 19.8 in round 2; 21 in round 1 is not
    assert math.isnan(table.loc["split", "time_to_target_s"])  # 28, then 25: never <= 19.8
    assert table["final_perplexity"].tolist() == [18.0, 25.0]
    assert table["initial_perplexity"].tolist() == [200.0, 200.0]
    assert table["final_rouge_l"].tolist() == [0.4, 0.25] and table["initial_rouge_l"].tolist() == [0.05, 0.05]
    assert table["final_exact_match"].tolist() == [0.1, 0.1]
    assert list(table.columns[:7]) == ["final_accuracy", "final_perplexity", "final_rouge_l", "final_exact_match",
                                       "initial_perplexity", "initial_rouge_l", "time_to_target_s"]
    markdown = (out / "comparison.md").read_text()
    assert markdown.startswith("| framework | final perplexity | final ROUGE-L | final exact match "
                               "| initial perplexity | initial ROUGE-L | time to target (s) |")
    assert "| fedllm | 18 | 0.400 | 0.100 | 200 | 0.0500 | 20 |" in markdown
    assert "time to target: the first round with perplexity <= 19.8" in markdown
    assert "final accuracy" not in markdown
    assert "final perplexity" in capsys.readouterr().out


def test_compare_target_perplexity_picks_the_first_row_at_or_below_it(tmp_path, monkeypatch):
    code, table, _ = _compare(tmp_path, monkeypatch, "--target", "perplexity=30")
    assert code == 0
    assert table["time_to_target_s"].tolist() == [10.0, 10.0]  # 21 and 28 in round 1 (10 s)
    assert (table["target_metric"] == "perplexity").all() and (table["target_value"] == 30.0).all()
    _, table, _ = _compare(tmp_path / "b", monkeypatch, "--target", "perplexity=20")
    assert table.loc["fedllm", "time_to_target_s"] == 20.0 and math.isnan(table.loc["split", "time_to_target_s"])


def test_compare_target_rouge_l(tmp_path, monkeypatch):
    code, table, out = _compare(tmp_path, monkeypatch, "--target", "rouge_l=0.3")
    assert code == 0
    assert table.loc["fedllm", "time_to_target_s"] == 20.0  # 0.2, then 0.4
    assert table.loc["split", "time_to_target_s"] == 10.0  # 0.3 first, 0.25 last: the first reach counts
    assert (table["target_metric"] == "rouge_l").all() and table["target_accuracy"].isna().all()
    assert "time to target: the first round with rouge_l >= 0.3" in (out / "comparison.md").read_text()


def test_compare_generative_seeds_summary(tmp_path, monkeypatch):
    code, table, out = _compare(tmp_path, monkeypatch, "--seeds", "0,1,2")
    assert code == 0
    t2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    fedllm = table.loc["fedllm"]
    assert fedllm["final_perplexity_mean"] == pytest.approx(19.0)  # 18, 19, 20
    assert fedllm["final_perplexity_ci95"] == pytest.approx(t2 * 1.0 / math.sqrt(3))
    assert fedllm["initial_perplexity_mean"] == 200.0 and fedllm["initial_perplexity_ci95"] == 0.0
    assert fedllm["final_rouge_l_mean"] == pytest.approx(0.4) and fedllm["target_metric"] == "perplexity"
    assert fedllm["targets_reached"] == 3  # each seed's target is 1.1 x its own lowest final: fedllm's
    assert table.loc["split", "targets_reached"] == 0
    runs = pd.read_csv(out / "comparison_runs.csv").set_index(["framework", "seed"])
    assert runs["target_value"].xs("fedllm", level="framework").tolist() == pytest.approx([19.8, 20.9, 22.0])
    markdown = (out / "comparison.md").read_text()
    assert "| fedllm | 19 ± 2.48 | 0.400 ± 0 |" in markdown
    assert "perplexity <= each seed's target (comparison_runs.csv)" in markdown


def test_classification_rows_name_accuracy_as_their_target(tmp_path, monkeypatch):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "cmp"
    assert main(["compare", str(SMOKE), "--frameworks", "fedllm,split", "--out", str(out), "--quiet",
                 "--target-accuracy", "0.5"]) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert (table["target_metric"] == "accuracy").all()
    assert table["target_value"].tolist() == table["target_accuracy"].tolist() == [0.5, 0.5]
    assert not set(GENERATIVE_METRICS) & set(table.columns)  # no generative columns in a classification table
    assert list(table.columns) == ["framework", *ALL_METRICS, "target_accuracy", "target_metric", "target_value",
                                   "status", "error", "run_dir"]
    assert "time to target:" not in (out / "comparison.md").read_text()
    assert main(["compare", str(SMOKE), "--frameworks", "fedllm,split", "--out", str(out), "--quiet",
                 "--overwrite", "--target", "accuracy=0.5"]) == 0
    assert pd.read_csv(out / "comparison.csv").drop(columns="run_dir").equals(table.drop(columns="run_dir"))


@pytest.mark.parametrize("args, named", [
    (["--target", "bogus=1"], "--target bogus=1"), (["--target", "perplexity=abc"], "--target perplexity=abc"),
    (["--target", "perplexity=20", "--target-accuracy", "0.5"], "--target perplexity=20 and --target-accuracy"),
])
def test_bad_target_options_exit_2_naming_the_option(tmp_path, capsys, args, named):
    assert main(["compare", str(SMOKE), "--out", str(tmp_path / "cmp"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}") and err.count("\n") == 1
    assert not (tmp_path / "cmp").exists()


def test_json_prints_the_comparison_as_one_document(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "cmp"
    assert main(["compare", str(SMOKE), "--frameworks", "fedllm,kd", "--out", str(out), "--json"]) == 1
    shown = capsys.readouterr()
    assert shown.out.count("\n") == 1 and "written:" in shown.err  # the markdown table is not printed
    rows = {row["framework"]: row for row in json.loads(shown.out)["rows"]}
    assert rows["fedllm"]["status"] == "completed" and rows["fedllm"]["final_accuracy"] == pytest.approx(0.5)
    assert rows["kd"]["status"] == "crashed" and rows["kd"]["final_accuracy"] is None


def test_each_run_of_a_comparison_keeps_its_console_in_its_run_log(tmp_path, monkeypatch, capsys):
    """What a run prints (and a crash's traceback) goes to that run's own run.log, as under `testbed run`."""
    def printing_run(scenario: Scenario, out_dir: Path, **kw: Any) -> dict[str, Any]:
        print(f"round 1 of {scenario.framework.name}")
        return fake_run_scenario(scenario, out_dir, **kw)

    monkeypatch.setattr(testbed.sim.batch, "run_scenario", printing_run)
    out = tmp_path / "cmp"
    assert main(["compare", str(SMOKE), "--out", str(out), "--set", "seed=1"]) == 1
    logs = {fw: (out / fw / "run.log").read_text() for fw in ("fedllm", "kd", "split")}
    for fw, text in logs.items():
        assert f"round 1 of {fw}\n" in text
        assert all(f"round 1 of {other}" not in text for other in logs if other != fw)
    assert "Traceback" in logs["kd"] and "RuntimeError: teacher exploded" in logs["kd"]
    assert "Traceback" not in logs["fedllm"]
    assert "round 1 of split" in capsys.readouterr().err  # the terminal still shows it (stdout: the table)
    assert main(["compare", str(SMOKE), "--out", str(out), "--set", "seed=1", "--overwrite", "--quiet"]) == 1
    assert "round 1 of fedllm\n" in (out / "fedllm" / "run.log").read_text()  # --quiet: the log is complete
    assert "round 1 of" not in capsys.readouterr().err


def test_a_comparison_leaves_the_run_log_of_a_folder_another_run_holds_alone(tmp_path, monkeypatch):
    from testbed.results.runfolder import claim

    monkeypatch.setattr(testbed.sim.batch, "run_scenario", fake_run_scenario)
    out = tmp_path / "cmp"
    (out / "fedllm").mkdir(parents=True)
    (out / "fedllm" / "run.log").write_text("the other run's log\n")
    with claim(out / "fedllm"):
        assert main(["compare", str(SMOKE), "--out", str(out), "--frameworks", "fedllm,split", "--quiet"]) == 1
    assert (out / "fedllm" / "run.log").read_text() == "the other run's log\n"
    table = pd.read_csv(out / "comparison.csv").set_index("framework")
    assert table.loc["fedllm", "status"] == "crashed" and table.loc["split", "status"] == "completed"
