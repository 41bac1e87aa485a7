"""`testbed report` on fleets: device-class lanes above 50 clients, the client round time and
straggler delay distributions of every run, Parquet tables, and a synthetic 10,000-client run
(tests/testbed/fleet_report_data.py) whose page stays small. Its speed is measured by
benchmarks/report_scale.py, not here (the time is printed only)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from testbed.cli.main import main
from testbed.results.report import ReportError, build_report
from testbed.results.report.analysis import (
    busy_share,
    client_round_times,
    device_class,
    fewer_classes,
    straggler_attribution,
    straggler_delays,
    waiting_spans,
)
from testbed.results.report.grid import grid_figure
from testbed.results.report.load import StressData, load_source
from testbed.results.report.plots import straggler_figure
from testbed.results.report.plots_fleet import lanes_figure
from testbed.results.report.run_sections import fleet
from tests.testbed.fleet_report_data import DEVICE_CLASSES, write_fleet_run
from tests.testbed.test_report import plots, write_run

FLEET_CLIENTS, FLEET_ROUNDS, FLEET_PER_ROUND = 10_000, 100, 1_000
MAX_PAGE_BYTES = 5_000_000


def _h2s(page: str) -> list[str]:
    return re.findall(r"<h2[^>]*>([^<]+)</h2>", page)


def test_device_class_drops_the_fleet_suffix_only():
    names = pd.Series(["pixel-7#12", "pixel-7", "jetson#nano#3", "rpi#x", None], dtype="object")
    assert device_class(names).tolist() == ["pixel-7", "pixel-7", "jetson#nano", "rpi#x", pd.NA]


def test_busy_share_is_the_mean_share_of_the_class_in_each_bin():
    times = pd.DataFrame({"device_class": ["a", "a", "b"], "client": [0, 1, 2], "start_s": [0.0, 5.0, 2.5],
                          "end_s": [10.0, 15.0, 5.0]})
    shares = busy_share(times, pd.Series({"a": 2, "b": 4}), np.array([0.0, 5.0, 10.0, 15.0, 20.0]))
    assert shares[0].tolist() == [0.5, 1.0, 0.5, 0.0]  # a: one of two, both, one, none
    assert shares[1].tolist() == pytest.approx([0.125, 0.0, 0.0, 0.0])  # b: one of four, half the bin


def test_waiting_merges_overlapping_activities_before_finding_gaps():
    spans = pd.DataFrame({"round": 1, "client": [0, 0, 0, 1], "category": "compute",
                          "start_s": [0.0, 2.0, 6.0, 1.0], "end_s": [5.0, 3.0, 8.0, 9.0]})
    waits = waiting_spans(spans, {1: 10.0}, {(1, 1)})
    assert waits[["client", "start_s", "end_s"]].values.tolist() == [[0, 5.0, 6.0], [0, 8.0, 10.0]]


def test_straggler_delay_is_the_last_minus_the_median_arrival(tmp_path):
    run = load_source(write_run(tmp_path / "run"))
    delays = straggler_delays(run.client_rounds)
    assert delays["round"].tolist() == [1, 2]
    assert delays["arrivals"].tolist() == [3, 1]  # round 2: the killed client does not arrive
    assert delays["median_end_s"].tolist() == [9.0, 21.5] and delays["delay_s"].tolist() == [3.0, 0.0]


def test_round_times_come_from_client_rounds_or_else_from_events(tmp_path):
    folder = write_run(tmp_path / "run")
    run = load_source(folder)
    times = client_round_times(run.client_rounds, run.events, pd.Series(dtype="string"))
    assert times["time_s"].tolist() == [5.0, 9.0, 12.0, 3.5, 9.0]
    assert times["device_class"].tolist() == ["pixel-7", "raspberry-pi-5", "jetson-nano", "pixel-7",
                                              "raspberry-pi-5"]
    (folder / "client_rounds.csv").unlink()
    run = load_source(folder)
    times = client_round_times(run.client_rounds, run.events, pd.Series({0: "pixel-7", 1: "rpi"}))
    assert times[["round", "client", "outcome", "time_s"]].values.tolist() == [
        [1, 0, "ok", 5.0], [1, 1, "ok", 9.0], [1, 2, "ok", 12.0], [2, 0, "failed", 3.5], [2, 1, "ok", 9.0]]
    assert times["device_class"].tolist() == ["pixel-7", "rpi", "unknown", "pixel-7", "rpi"]


def test_parquet_beside_the_csv_is_read_instead(tmp_path):
    folder = write_run(tmp_path / "run")
    events = pd.read_csv(folder / "events.csv")
    events.assign(payload_bytes=events["payload_bytes"] * 2).to_parquet(folder / "events.parquet")
    assert load_source(folder).events["payload_bytes"].sum() == 2 * events["payload_bytes"].sum()
    for name in ("events", "rounds", "client_rounds"):  # Parquet only: still a run folder
        if not (folder / f"{name}.parquet").exists():
            pd.read_csv(folder / f"{name}.csv").to_parquet(folder / f"{name}.parquet")
        (folder / f"{name}.csv").unlink()
    run = load_source(folder)
    assert len(run.events) == len(events) and run.rounds["round"].tolist() == [0, 1, 2]
    (folder / "rounds.parquet").write_text("not parquet")
    with pytest.raises(ReportError, match=r"rounds\.parquet: not a readable Parquet file"):
        load_source(folder)


@pytest.mark.parametrize("clients, lanes", [(50, False), (51, True)])
def test_lanes_replace_the_per_client_timeline_above_50_clients(tmp_path, clients, lanes):
    folder = write_fleet_run(tmp_path / "run", clients=clients, rounds=3, per_round=20, parquet=False)
    page = build_report(folder).read_text()
    assert ("Timeline by device class" in _h2s(page)) is lanes
    assert ("Per-client timeline" in _h2s(page)) is not lanes


def test_lanes_are_device_classes_by_size_with_the_first_rounds_stretched(tmp_path):
    run = load_source(write_fleet_run(tmp_path / "run", clients=400, rounds=8, per_round=100, parquet=False))
    view = fleet(run)
    fig = lanes_figure(view.times, view.sizes, run.rounds)
    whole, first = [t for t in fig.data if t.type == "heatmap"]
    assert list(whole.y) == ["pixel-7 (120 clients)", "galaxy-s23 (80 clients)", "iphone-14 (60 clients)",
                             "raspberry-pi-5 (60 clients)", "jetson-nano (48 clients)", "jetson-orin (32 clients)"]
    assert whole.z.shape == (6, 1000) and 0 < whole.z.max() <= 1 and whole.zmax == first.zmax  # one colour scale
    assert [a.text for a in fig.layout.annotations] == ["whole run", "rounds 1-3, stretched"]
    assert fig.layout.xaxis2.range[1] == pytest.approx(run.rounds["sim_end_s"].iloc[3] * 1.01)
    ticks = [t for t in fig.data if t.name == "failures"]
    failed = view.times["outcome"].isin(["failed", "oom"]).sum()
    assert sum(ticks[0].customdata) == failed  # every failure of the run in the whole-run panel


def test_stragglers_go_by_device_class_when_many_clients_straggle(tmp_path):
    run = load_source(write_fleet_run(tmp_path / "run", clients=300, rounds=30, per_round=100, parquet=False))
    table = straggler_attribution(run.rounds, run.client_rounds)
    assert table["straggler"].nunique() > 20
    fig = straggler_figure(table, fleet(run).names)
    totals = [t for t in fig.data if t.orientation == "h"]
    assert {t.y[0] for t in totals} <= set(DEVICE_CLASSES)
    assert sum(t.x[0] for t in totals) == pytest.approx(table["held_back_s"].sum())
    assert fig.layout.xaxis2.title.text == "total held back (s), by device class"


def test_run_without_learning_metrics_says_they_were_not_measured(tmp_path):
    folder = write_fleet_run(tmp_path / "run", clients=60, rounds=2, per_round=30, parquet=False)
    page = build_report(folder).read_text()
    assert "No accuracy was recorded. Not measured: emulation.compute: predicted trains nothing." in page


def test_compare_and_stress_folders_of_fleet_runs_render(tmp_path):
    cmp = tmp_path / "cmp"
    for i, name in enumerate(("fedllm", "split")):
        write_fleet_run(cmp / name, clients=200, rounds=4, per_round=60, seed=i)
    pd.DataFrame({"framework": ["fedllm", "split"]}).to_csv(cmp / "comparison.csv", index=False)
    assert main(["report", str(cmp)]) == 0
    page = (cmp / "report" / "index.html").read_text()
    assert page.count(">Timeline by device class</h3>") == 2 and page.count(">Straggler delay</h3>") == 2
    assert {"timeline-split", "round_times-split", "memory-split", "energy-fedllm"} <= set(plots(page))
    stress = tmp_path / "stress"
    for key in ("emulation.dropout=0.0", "emulation.dropout=0.1"):
        write_fleet_run(stress / key, clients=100, rounds=3, per_round=30, parquet=False)
    pd.DataFrame({"emulation.dropout": [0.0, 0.1], "sim_wall_clock_s": [300.0, 280.0], "failures": [3, 9],
                  "status": "completed", "run_dir": [str(stress / "emulation.dropout=0.1"),
                                                     str(stress / "emulation.dropout=0.0")]}
                 ).to_csv(stress / "stress.csv", index=False)
    page = build_report(stress).read_text()
    assert "Timeline by device class" not in page and plots(page) == ["grid", "bytes"]  # no learning metrics
    assert ">Grid over emulation.dropout</h2>" in page and "<td>280</td>" in page


def test_stress_grid_is_a_metric_per_swept_value(tmp_path):
    stress = tmp_path / "stress"
    table = pd.DataFrame({"emulation.dropout": [0.0, 0.1, 0.0, 0.1], "network.link": ["lte", "lte", "5g", "5g"],
                          "final_accuracy": [0.6, 0.5, 0.62, 0.55], "sim_wall_clock_s": [90.0, 80.0, 40.0, 35.0],
                          "time_to_target_s": [None, None, None, None], "status": "completed", "error": None,
                          "run_dir": "x"})
    stress.mkdir()
    table.to_csv(stress / "stress.csv", index=False)
    source = load_source(stress)
    assert isinstance(source, StressData) and source.swept == ["emulation.dropout", "network.link"]
    assert source.runs == {}
    fig = grid_figure(source.stress, source.swept)
    assert [a.text for a in fig.layout.annotations] == ["final_accuracy", "sim_wall_clock_s"]  # NaN metric left out
    lte, fiveg = [t for t in fig.data if t.xaxis == "x2"]
    assert (lte.name, list(lte.x), list(lte.y)) == ("network.link=lte", ["0.0", "0.1"], [90.0, 80.0])
    assert (fiveg.name, list(fiveg.y)) == ("network.link=5g", [40.0, 35.0])
    page = build_report(stress).read_text()
    assert plots(page) == ["grid"] and ">Grid over emulation.dropout, network.link</h2>" in page
    (stress / "stress.csv").write_text("final_accuracy,run_dir\n0.5,x\n")
    with pytest.raises(ReportError, match=r"stress\.csv: no swept key columns before the metrics"):
        load_source(stress)


def test_a_10000_client_run_renders_a_small_page(tmp_path):
    started = time.perf_counter()
    folder = write_fleet_run(tmp_path / "fleet", clients=FLEET_CLIENTS, rounds=FLEET_ROUNDS,
                             per_round=FLEET_PER_ROUND)
    written = time.perf_counter()
    index = build_report(folder)
    rendered = time.perf_counter()
    size = index.stat().st_size - len(get_plotlyjs())  # beyond the inlined plotly.js
    print(f"\n{FLEET_CLIENTS:,} clients, {len(pd.read_parquet(folder / 'events.parquet')):,} events: written in "
          f"{written - started:.1f} s, report in {rendered - written:.1f} s, page {size / 1e6:.2f} MB")
    assert size < MAX_PAGE_BYTES
    page = index.read_text()
    titles = _h2s(page)
    for title in ("Timeline by device class", "Client round time", "Straggler delay", "Straggler attribution"):
        assert title in titles
    assert "Per-client timeline" not in titles
    assert "one lane per device class" in page and "Straggler delay: per round, the last arrival" in page
    assert plots(page) == ["timeline", "round_times", "memory", "energy", "bytes", "stragglers", "straggler_delay"]
    assert "Energy per client" in titles and "Memory per client" in titles
    missing = int(pd.read_parquet(folder / "client_rounds.parquet", columns=["energy_j"])["energy_j"].isna().sum())
    assert missing > 0 and (f"{missing:,} of {FLEET_ROUNDS * FLEET_PER_ROUND:,} client-rounds have no energy figure "
                            "(NaN), left out of the sums: no power_w for iphone-14") in page
    assert f"Clients ({FLEET_CLIENTS:,}, by device and link)" in page
    assert f"<td>{FLEET_PER_ROUND} clients: " in page  # rounds.csv's selected, shortened
    assert page.count("<tr") < 1_000  # summaries, not the 100,000 client-rounds
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["clients"]) == FLEET_CLIENTS


def test_beyond_24_device_classes_the_smallest_become_one_lane():
    sizes = pd.Series({f"d{i}": 100 - i for i in range(30)})
    times = pd.DataFrame({"device_class": ["d0", "d23", "d29"], "client": [0, 1, 2]})
    merged_times, merged = fewer_classes(times, sizes, 24)
    assert list(merged.index[:23]) == [f"d{i}" for i in range(23)]
    assert merged.index[-1] == "other (7 classes)" and merged.iloc[-1] == sum(100 - i for i in range(23, 30))
    assert merged_times["device_class"].tolist() == ["d0", "other (7 classes)", "other (7 classes)"]
