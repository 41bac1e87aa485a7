"""`testbed report`: the HTML page of a run or compare folder, from small hand-made run folders
(numbers known in advance) plus one real tiny-model run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from testbed.cli.main import main
from testbed.results.report import build_report
from testbed.results.report.analysis import bytes_by_kind, failures, straggler_attribution, timeline_spans
from testbed.results.report.load import load_source
from testbed.results.report.plots import accuracy_figure, loss_figure, metric_figure, timeline_figure
from testbed.results.report.plots_clients import energy_figure, memory_figure
from testbed.results.report.resources import energy_by, memory_by_client

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
NAMES = {0: "pixel-7", 1: "raspberry-pi-5", 2: "jetson-nano"}
SECTIONS = ("Scenario", "Per-client timeline", "Client round time", "Accuracy vs simulated wall-clock",
            "Loss vs simulated wall-clock", "Memory per client", "Energy per client", "Bytes by exchange kind", "Straggler attribution", "Straggler delay", "Rounds (rounds.csv)")
RUN_PLOTS = ["timeline", "round_times", "memory", "energy", "stragglers", "straggler_delay"]  # a run's own plots
RUN_PAGE = ["timeline", "round_times", "accuracy", "loss", "memory", "energy", "bytes", "stragglers",
            "straggler_delay"]  # the run page's plots, in order


def _event(rnd: int, client: int, kind: str, start_s: float, end_s: float, payload: int = 0,
           status: str = "ok") -> dict:
    """An events.csv row; a compute's device seconds are 0.8 x its span."""
    device_s = 0.8 * (end_s - start_s) if kind == "compute" else 0.0
    return {"round": rnd, "client": client, "kind": kind, "payload_bytes": payload, "wire_bytes": payload + 40,
            "sim_start_s": start_s, "sim_end_s": end_s, "host_s": 0.0, "device_s": device_s, "status": status,
            "detail": ""}


BUDGET_MB = {0: 3000.0, 1: 2000.0, 2: 1800.0}
PEAK_MB = {0: 1200.0, 1: 2100.0, 2: 900.0}  # raspberry-pi-5 goes over its budget


def _client_round(rnd: int, client: int, end_s: float, start_s: float, outcome: str = "ok", cause: str = "") -> dict:
    """A client_rounds.csv row; memory 100 MB higher in round 2; energy 10 J compute + 2 J radio
    per round (jetson-nano: no power figure, NaN)."""
    compute_j, radio_j = (float("nan"), float("nan")) if client == 2 else (10.0 * rnd, 2.0)
    return {"round": rnd, "client": client, "device": NAMES[client], "outcome": outcome, "cause": cause,
            "sim_start_s": start_s, "sim_end_s": end_s, "peak_rss_mb": PEAK_MB[client] + 100.0 * (rnd - 1),
            "memory_budget_mb": BUDGET_MB[client], "over_memory_budget": PEAK_MB[client] > BUDGET_MB[client],
            "energy_j": compute_j + radio_j, "compute_energy_j": compute_j, "radio_energy_j": radio_j,
            "energy_note": "no power_w for jetson-nano" if client == 2 else ""}


def write_run(folder: Path, *, framework: str = "fedllm", accuracy: tuple[float, ...] = (0.2, 0.3, 0.4),
              student_accuracy: tuple[float, ...] | None = None) -> Path:
    """A two-round run of three clients. Round 1 [0, 12.5 s]: clients end at 5, 9 and 12 s
    (client 2 holds the round back by 3 s). Round 2 [12.5, 22 s]: client 0 is killed at 16 s,
    client 1 arrives alone at 21.5 s after a 0.5 s gap (14.5-15 s)."""
    folder.mkdir(parents=True)
    events = []
    for client, end_s in ((0, 5.0), (1, 9.0), (2, 12.0)):
        events += [_event(1, client, "adapter_down", 0.0, 1.0, 1000), _event(1, client, "compute", 1.0, end_s - 1),
                   _event(1, client, "adapter_up", end_s - 1, end_s, 800)]
    events += [_event(1, -1, "aggregate", 12.0, 12.5),
               _event(2, 0, "adapter_down", 12.5, 13.5, 1000), _event(2, 0, "compute", 13.5, 16.0, status="failed"),
               _event(2, 1, "adapter_down", 12.5, 13.5, 1000), _event(2, 1, "compute", 13.5, 14.5),
               _event(2, 1, "adapter_up", 15.0, 21.5, 800), _event(2, -1, "aggregate", 21.5, 22.0)]
    pd.DataFrame(events).to_csv(folder / "events.csv", index=False)
    pd.DataFrame([_client_round(1, 0, 5.0, 0.0), _client_round(1, 1, 9.0, 0.0), _client_round(1, 2, 12.0, 0.0),
                  _client_round(2, 0, 16.0, 12.5, "failed", "killed"), _client_round(2, 1, 21.5, 12.5)],
                 ).to_csv(folder / "client_rounds.csv", index=False)
    rounds = pd.DataFrame({"round": [0, 1, 2], "sim_start_s": [0.0, 0.0, 12.5], "sim_end_s": [0.0, 12.5, 22.0],
                           "participants": [0, 3, 1], "failures": [0, 0, 1], "straggler": [None, 2, 1],
                           "accuracy": list(accuracy), "train_loss": [None, 2.0, 1.5],
                           "eval_loss": [2.5, 2.1, 1.7]})
    rounds["straggler"] = rounds["straggler"].astype("Int64")
    if student_accuracy:
        rounds["student_accuracy"] = list(student_accuracy)
    rounds.to_csv(folder / "rounds.csv", index=False)
    summary = {"scenario": "hand", "framework": framework, "model": "tiny-llama", "status": "completed",
               "final_accuracy": accuracy[-1], "sim_wall_clock_s": 22.0, "versions": {"python": "3.11"},
               "clients": [{"client": c, "name": n, "device": n} for c, n in NAMES.items()]}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "scenario.yaml").write_text(f"name: hand\nframework: {{name: {framework}}}\n")
    return folder


def plots(page: str) -> list[str]:
    """The names of the page's plots (div ids ``plot-<name>``), in order."""
    return re.findall(r'<div id="plot-([^"]+)" class="plotly-graph-div"', page)


def _legend_labels(fig) -> list[str]:
    return [t.name for t in fig.data if t.showlegend is not False]


def test_straggler_held_back_by_its_end_minus_the_second_latest(tmp_path):
    run = load_source(write_run(tmp_path / "run"))
    table = straggler_attribution(run.rounds, run.client_rounds)
    assert table["round"].tolist() == [1, 2]
    assert table["straggler"].tolist() == [2, 1]
    assert table["straggler_end_s"].tolist() == [12.0, 21.5]
    assert table["runner_up"].iloc[0] == 1 and table["runner_up_end_s"].iloc[0] == 9.0
    assert table["held_back_s"].tolist() == [3.0, 0.0]  # round 2: the failed client does not count
    assert pd.isna(table["runner_up"].iloc[1])


def test_waiting_fills_gaps_and_the_tail_but_not_after_a_failure(tmp_path):
    run = load_source(write_run(tmp_path / "run"))
    spans = timeline_spans(run.events, run.rounds, run.client_rounds)
    waiting = spans[spans["category"] == "waiting"]

    def waits(rnd: int, client: int) -> list[tuple[float, float]]:
        part = waiting[(waiting["round"] == rnd) & (waiting["client"] == client)]
        return list(zip(part["start_s"], part["end_s"]))

    assert waits(1, 0) == [(5.0, 12.5)] and waits(1, 1) == [(9.0, 12.5)] and waits(1, 2) == [(12.0, 12.5)]
    assert waits(2, 1) == [(14.5, 15.0), (21.5, 22.0)]
    assert waits(2, 0) == []  # killed at 16 s: not waiting afterwards
    assert spans[spans["category"] == "failed compute"][["start_s", "end_s"]].values.tolist() == [[13.5, 16.0]]
    assert set(spans["category"]) == {"waiting", "download", "compute", "failed compute", "upload", "aggregate"}


def test_timeline_has_a_row_per_client_and_a_cross_at_the_failure(tmp_path):
    run = load_source(write_run(tmp_path / "run"))
    fig = timeline_figure(timeline_spans(run.events, run.rounds, run.client_rounds), failures(run.client_rounds),
                          run.rounds, NAMES)
    rows = list(fig.layout.yaxis.categoryarray)[::-1]  # top to bottom
    assert rows == ["server", "c0 pixel-7", "c1 raspberry-pi-5", "c2 jetson-nano"]
    (cross,) = [t for t in fig.data if t.type == "scatter"]
    assert list(cross.x) == [16.0] and list(cross.y) == ["c0 pixel-7"] and list(cross.text) == ["killed"]
    assert cross.marker.symbol == "x"
    assert [shape.x0 for shape in fig.layout.shapes] == [12.5, 22.0]  # round ends, dashed
    assert [a.text for a in fig.layout.annotations] == ["r1", "r2"]
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    assert list(bars) == ["compute", "failed compute", "upload", "download", "aggregate", "waiting"]
    failed = bars["failed compute"]
    assert list(failed.y) == ["c0 pixel-7"] and list(failed.base) == [13.5] and list(failed.x) == [2.5]
    up = bars["upload"]  # hover data: kind, round, bytes, device seconds, end
    assert [row[:3] for row in up.customdata.tolist()][:1] == [["adapter_up", 1, 800]]
    assert "bytes" in up.hovertemplate and "device" in up.hovertemplate


def test_bytes_by_kind_sums_payload_per_exchange_kind(tmp_path):
    run = load_source(write_run(tmp_path / "run"))
    table = bytes_by_kind(run.events).set_index("kind")
    assert table.loc["adapter_down"].tolist() == [5, 5000, 5200]  # exchanges, payload, wire
    assert table.loc["adapter_up"].tolist() == [4, 3200, 3360]
    assert set(table.index) == {"adapter_down", "adapter_up"}  # compute and aggregate move no bytes


def test_run_report_writes_one_page_with_every_section_and_embedded_plots(tmp_path):
    folder = write_run(tmp_path / "run", framework="kd", student_accuracy=(0.1, 0.15, 0.25))
    assert main(["report", str(folder)]) == 0
    page = (folder / "report" / "index.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page
    assert plots(page) == RUN_PAGE and 'data-figures="9"' in page
    assert page.count("<script") == 1 + len(RUN_PAGE)  # plotly.js once, then one per plot
    assert "cdn" not in page.split("<body", 1)[1].lower() and not list((folder / "report").glob("*.png"))
    assert "1 of 5 client-rounds have no energy figure (NaN), left out of the sums: no power_w for jetson-nano" in page
    assert "Client-rounds over budget: 2." in page
    assert "<td>3</td>" in page and "<td>jetson-nano</td>" in page  # the 3 s straggler row
    assert "<td>5000</td>" in page and "<td>3200</td>" in page  # bytes table
    assert 'class="ok">completed' in page


def test_kd_student_accuracy_is_a_dashed_line(tmp_path):
    run = load_source(write_run(tmp_path / "run", framework="kd", student_accuracy=(0.1, 0.15, 0.25)))
    fig = accuracy_figure({"kd": [run.rounds]})
    assert _legend_labels(fig) == ["kd", "kd student"]
    solid, dashed = fig.data
    assert list(solid.x) == [0.0, 12.5, 22.0] and list(solid.y) == [0.2, 0.3, 0.4]
    assert dashed.line.dash == "dash" and list(dashed.y) == [0.1, 0.15, 0.25]


def test_loss_memory_and_energy_of_each_client(tmp_path):
    run = load_source(write_run(tmp_path / "run"))
    train, evaluated = loss_figure({"fedllm": [run.rounds]}).data
    assert list(train.x) == [12.5, 22.0] and list(train.y) == [2.0, 1.5]
    assert list(evaluated.y) == [2.5, 2.1, 1.7] and evaluated.line.dash == "dot"
    memory = memory_by_client(run.client_rounds, NAMES)
    assert memory["peak_rss_mb"].tolist() == [1300.0, 2200.0, 900.0]  # the higher of the client's rounds
    assert memory["over_rounds"].tolist() == [0, 2, 0] and memory["memory_budget_mb"].tolist() == [3000, 2000, 1800]
    peaks, budgets = memory_figure(memory, by_class=False).data
    assert list(peaks.y) == ["c0 pixel-7", "c1 raspberry-pi-5", "c2 jetson-nano"]
    assert list(peaks.marker.color) == ["#4C72B0", "#C44E52", "#4C72B0"] and list(budgets.x) == [3000, 2000, 1800]
    energy = energy_by(run.client_rounds, NAMES, by_class=False)
    assert energy["energy_j"].tolist()[:2] == [34.0, 34.0] and pd.isna(energy["energy_j"].iloc[2])  # 10+2, 20+2
    assert energy["compute_energy_j"].tolist()[:2] == [30.0, 30.0] and energy["nan_rounds"].tolist() == [0, 0, 1]
    _, radio, no_figure = energy_figure(energy, by_class=False).data
    assert list(radio.x)[:2] == [4.0, 4.0] and list(no_figure.y) == ["c2 jetson-nano"]


def test_compare_folder_draws_one_accuracy_line_per_framework(tmp_path):
    cmp = tmp_path / "cmp"
    write_run(cmp / "fedllm", accuracy=(0.2, 0.3, 0.4))
    write_run(cmp / "split", framework="split", accuracy=(0.2, 0.5, 0.6))
    write_run(cmp / "kd" / "seed0", framework="kd", accuracy=(0.2, 0.25, 0.3))
    write_run(cmp / "kd" / "seed1", framework="kd", accuracy=(0.2, 0.35, 0.45))
    pd.DataFrame({"framework": ["split", "fedllm", "kd"], "final_accuracy": [0.6, 0.4, 0.375],
                  "time_to_target_s": [12.5, 22.0, None], "sim_wall_clock_s": [22.0, 22.0, 22.0]}
                 ).to_csv(cmp / "comparison.csv", index=False)

    source = load_source(cmp)
    assert list(source.runs) == ["split", "fedllm", "kd"]  # comparison.csv's order
    fig = accuracy_figure({name: [r.rounds for r in seeds] for name, seeds in source.runs.items()})
    assert _legend_labels(fig) == ["split", "fedllm", "kd (2 seeds)"]
    assert [list(line.y) for line in fig.data] == [[0.2, 0.5, 0.6], [0.2, 0.3, 0.4],
                                                   [0.2, 0.25, 0.3], [0.2, 0.35, 0.45]]
    kd_lines = fig.data[2:]
    assert kd_lines[0].line.color == kd_lines[1].line.color and kd_lines[0].line.width == 1.0

    assert main(["report", str(cmp)]) == 0
    out = cmp / "report"
    page = (out / "index.html").read_text()
    assert "<td>0.375</td>" in page  # comparison.csv
    for name in ("split", "fedllm", "kd"):
        assert f"<h2>{name}</h2>" in page
    assert "<td>kd/seed0</td>" in page and "<td>2</td>" in page  # first seed drawn, two seeds found
    assert plots(page) == ["accuracy", "loss", "bytes", *(f"{p}-{name}" for name in ("split", "fedllm", "kd")
                                                          for p in RUN_PLOTS)]


def test_compare_folder_renders_beside_a_framework_that_crashed_at_start(tmp_path):
    cmp = tmp_path / "cmp"
    write_run(cmp / "fedllm")
    (cmp / "kd").mkdir()
    (cmp / "kd" / "summary.json").write_text(json.dumps({"status": "crashed"}))  # no tables
    pd.DataFrame({"framework": ["fedllm", "kd"], "status": ["completed", "crashed"]}).to_csv(
        cmp / "comparison.csv", index=False)
    assert main(["report", str(cmp)]) == 0
    page = (cmp / "report" / "index.html").read_text()
    assert f"Not rendered: {cmp / 'kd'}: missing run folder (events.csv, rounds.csv) for framework kd" in page
    assert "<h2>fedllm</h2>" in page and "<h2>kd</h2>" not in page


def test_crashed_run_with_fewer_rounds_still_renders(tmp_path):
    folder = write_run(tmp_path / "run")
    rounds = pd.read_csv(folder / "rounds.csv")
    rounds[rounds["round"] < 2].to_csv(folder / "rounds.csv", index=False)  # round 2 never recorded
    (folder / "client_rounds.csv").unlink()
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "status": "crashed"}))
    assert main(["report", str(folder)]) == 0
    page = (folder / "report" / "index.html").read_text()
    assert 'class="bad">crashed' in page and "No round had a straggler." in page
    assert "timeline" in plots(page) and "stragglers" not in plots(page)


def test_run_without_rows_renders_notes_not_empty_plots(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.csv").write_text(",".join(
        ["round", "client", "kind", "payload_bytes", "wire_bytes", "sim_start_s", "sim_end_s", "status"]) + "\n")
    (folder / "rounds.csv").write_text("round,sim_start_s,sim_end_s,straggler,accuracy\n")
    build_report(folder)
    page = (folder / "report" / "index.html").read_text()
    assert "No events." in page and "No accuracy was recorded." in page and "No transfers." in page
    assert "No loss was recorded." in page and "No peak memory was recorded" in page
    assert plots(page) == [] and 'data-figures="0"' in page


def _rounds_only(d: Path) -> None:
    (d / "rounds.csv").write_text("round,sim_start_s,sim_end_s,straggler,accuracy\n")


def _compare_run_without_events(d: Path) -> None:
    write_run(d / "fedllm")
    (d / "fedllm" / "events.csv").unlink()
    (d / "comparison.csv").write_text("framework\nfedllm\n")


def _comparison_without_its_folder(d: Path) -> None:
    (d / "comparison.csv").write_text("framework\nsplit\n")


def _tables_without_columns(d: Path) -> None:
    for name in ("events.csv", "rounds.csv"):
        (d / name).write_text("round,client\n1,0\n")


def _empty_tables(d: Path) -> None:
    for name in ("events.csv", "rounds.csv"):
        (d / name).write_text("")


@pytest.mark.parametrize("make, where, expected", [
    (lambda d: None, "", "neither a run folder (events.csv, rounds.csv) nor a compare folder"),
    (_rounds_only, "", "not a run folder, missing events.csv"),
    (_compare_run_without_events, "/fedllm", "not a run folder, missing events.csv"),
    (_comparison_without_its_folder, "/split", "missing run folder (events.csv, rounds.csv) for framework split"),
    (_tables_without_columns, "/events.csv", "missing columns kind, payload_bytes"),
    (_empty_tables, "/events.csv", "empty file"),
])
def test_bad_input_exits_2_with_the_path_and_what_is_missing(tmp_path, capsys, make, where, expected):
    folder = tmp_path / "dir"
    folder.mkdir()
    make(folder)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder}{where}: {expected}") and err.count("\n") == 1
    assert not (folder / "report").exists()


def test_missing_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    expected = f"error: {tmp_path / 'nope'}: not a folder (expected a run folder or a compare folder)\n"
    assert capsys.readouterr().err == expected


def test_report_of_a_real_smoke_run_agrees_with_its_tables(assets, tmp_path):
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(SMOKE), "--out", str(out), "--quiet",
                    "--set", "emulation.backend=inproc"], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                   capture_output=True, timeout=300)
    assert main(["report", str(out)]) == 0
    run = load_source(out)
    trained = run.rounds[run.rounds["round"] > 0]
    table = straggler_attribution(run.rounds, run.client_rounds)
    assert table["straggler"].tolist() == trained["straggler"].tolist()
    for row in table.itertuples():
        ends_s = run.client_rounds[run.client_rounds["round"] == row.round]["sim_end_s"].sort_values()
        assert row.held_back_s == pytest.approx(ends_s.iloc[-1] - ends_s.iloc[-2])
    sent = bytes_by_kind(run.events).set_index("kind")["payload_bytes"]
    assert sent["adapter_up"] == trained["bytes_up"].sum() and sent["adapter_down"] == trained["bytes_down"].sum()
    page = (out / "report" / "index.html").read_text()
    assert {"timeline", "accuracy", "loss", "bytes", "stragglers"} <= set(plots(page))


# -- generative tasks: perplexity, ROUGE-L and exact match instead of accuracy -----------------------
def write_generative_run(folder: Path, *, framework: str = "fedllm",
                         perplexity: tuple[float, ...] = (200.0, 30.0, 18.0),
                         rouge_l: tuple[float, ...] | None = (0.05, 0.2, 0.4),
                         exact_match: tuple[float, ...] | None = (0.0, 0.1, 0.25)) -> Path:
    """write_run's run, of an instruction task: an empty accuracy column, perplexity and (when
    given) rouge_l / exact_match per round; summary.json records the task and final perplexity only."""
    write_run(folder, framework=framework, accuracy=(float("nan"),) * 3)
    rounds = pd.read_csv(folder / "rounds.csv").assign(perplexity=list(perplexity))
    for name, values in (("rouge_l", rouge_l), ("exact_match", exact_match)):
        if values:
            rounds[name] = list(values)
    rounds.to_csv(folder / "rounds.csv", index=False)
    summary = json.loads((folder / "summary.json").read_text())
    del summary["final_accuracy"]
    (folder / "summary.json").write_text(json.dumps({**summary, "task": "instruction",
                                                     "final_perplexity": perplexity[-1]}))
    return folder


def test_generative_run_report_draws_each_task_metric_against_wall_clock(tmp_path):
    folder = write_generative_run(tmp_path / "run")
    assert main(["report", str(folder)]) == 0
    page = (folder / "report" / "index.html").read_text()
    for title in ("Perplexity", "ROUGE-L", "Exact match"):
        assert f">{title} vs simulated wall-clock</h2>" in page
    assert "Accuracy vs simulated wall-clock" not in page
    assert "Perplexity (exp of the mean negative log-likelihood per scored token" in page
    assert plots(page) == ["timeline", "round_times", "perplexity", "rouge_l", "exact_match", "loss", "memory",
                           "energy", "bytes", "stragglers", "straggler_delay"]
    assert '<a href="#perplexity">perplexity</a><a href="#rouge_l">ROUGE-L</a>' in page
    # facts: summary.json's final perplexity; initial perplexity and ROUGE-L from rounds.csv
    for label, value in (("initial perplexity", "200"), ("final perplexity", "18"), ("initial ROUGE-L", "0.05"),
                         ("final ROUGE-L", "0.4"), ("final exact match", "0.25")):
        assert f"<tr><th>{label}</th><td>{value}</td></tr>" in page
    assert "final accuracy" not in page


def test_perplexity_figure_is_one_line_per_framework_on_a_log_axis(tmp_path):
    run = load_source(write_generative_run(tmp_path / "run"))
    fig = metric_figure({"fedllm": [run.rounds]}, "perplexity")
    (line,) = fig.data
    assert list(line.x) == [0.0, 12.5, 22.0] and list(line.y) == [200.0, 30.0, 18.0]
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.title.text == "perplexity (lower is better)"
    rouge = metric_figure({"fedllm": [run.rounds]}, "rouge_l")
    assert list(rouge.data[0].y) == [0.05, 0.2, 0.4] and rouge.layout.yaxis.title.text == "ROUGE-L (higher is better)"
    assert accuracy_figure({"fedllm": [run.rounds]}) is None  # the accuracy column is empty
    narrow = load_source(write_generative_run(tmp_path / "narrow", perplexity=(50.0, 40.0, 30.0)))
    assert metric_figure({"fedllm": [narrow.rounds]}, "perplexity").layout.yaxis.type is None  # < 10x: linear


def test_generative_run_without_generation_draws_perplexity_only(tmp_path):
    folder = write_generative_run(tmp_path / "run", rouge_l=None, exact_match=None)
    build_report(folder)
    page = (folder / "report" / "index.html").read_text()
    assert ">Perplexity vs simulated wall-clock</h2>" in page and "ROUGE-L vs" not in page
    assert "perplexity" in plots(page) and "rouge_l" not in plots(page)


def test_generative_compare_folder_lists_final_and_initial_perplexity(tmp_path):
    cmp = tmp_path / "cmp"
    write_generative_run(cmp / "fedllm")
    write_generative_run(cmp / "split", framework="split", perplexity=(200.0, 40.0, 25.0), rouge_l=(0.05, 0.3, 0.35))
    source = load_source(cmp)
    fig = metric_figure({name: [r.rounds for r in seeds] for name, seeds in source.runs.items()}, "perplexity")
    assert _legend_labels(fig) == ["fedllm", "split"]
    assert [list(line.y) for line in fig.data] == [[200.0, 30.0, 18.0], [200.0, 40.0, 25.0]]
    assert main(["report", str(cmp)]) == 0
    page = (cmp / "report" / "index.html").read_text()
    assert ("<th>final_perplexity</th>\n      <th>initial_perplexity</th>\n      <th>final_rouge_l</th>\n"
            "      <th>initial_rouge_l</th>") in page
    assert "<td>25</td>" in page and "<td>0.35</td>" in page
    assert len(plots(page)) == 3 + 2 + 2 * len(RUN_PLOTS)  # 3 metrics, loss, bytes, each run's


def test_a_long_timeline_draws_its_first_rounds_only():
    rounds = pd.DataFrame({"round": range(0, 401), "sim_start_s": [10.0 * max(r - 1, 0) for r in range(401)],
                           "sim_end_s": [10.0 * r for r in range(401)]})
    spans = pd.DataFrame([{"round": r, "client": c, "category": "compute", "start_s": 10.0 * (r - 1),
                           "end_s": 10.0 * r - 1, "kind": "compute", "payload_bytes": 0, "device_s": 9.0}
                          for r in range(1, 401) for c in range(60)])  # 24,000 spans
    fig = timeline_figure(spans, failures(pd.DataFrame(columns=["round", "client", "outcome", "cause", "sim_end_s"])),
                          rounds, {})
    (bars,) = fig.data
    drawn_rounds = sorted({int(r[1]) for r in bars.customdata})
    assert drawn_rounds == list(range(1, 334)) and len(bars.x) == 333 * 60 <= 20_000  # whole rounds, in order
    assert len(fig.layout.shapes) == 0  # more than ROUND_LINES (200) rounds drawn: no round lines
