"""Mixed precision: what `auto` becomes, and the measured speed-up bf16 spans are dilated with."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_runner import SMOKE, _run

from testbed.config.scenario import load_scenario
from testbed.host import precision


@pytest.mark.parametrize(("setting", "native", "speedup", "expected"), [
    ("auto", True, 1.5, ("bf16", 1.5)),
    ("auto", True, 1.05, ("fp32", None)),  # native but not faster for this model and shape
    ("auto", False, 1.5, ("fp32", None)),  # emulated bf16: not even measured
    ("fp32", True, 1.5, ("fp32", None)),
    ("bf16", True, 0.8, ("bf16", 0.8)),  # asked for: used, and dilated with what it measured
])
def test_choose(monkeypatch, tmp_path, setting, native, speedup, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    measured = []
    monkeypatch.setattr(precision, "cached_step_speedup", lambda *a, **k: measured.append(1) or speedup)
    scenario = load_scenario(SMOKE, [f"framework.precision={setting}"])
    assert precision.choose(scenario, "unused", threads=1, cache=tmp_path) == expected
    assert bool(measured) == (setting == "bf16" or (setting == "auto" and native))


def test_step_speedup_is_measured_once_then_read_from_the_cache(assets, monkeypatch, tmp_path):
    scenario = load_scenario(SMOKE, [])
    calls = []

    def fake_measure(sc, model_dir, *, threads):
        calls.append(threads)
        return 1.25

    monkeypatch.setattr(precision, "measure_step_speedup", fake_measure)
    args = dict(threads=1, cache=tmp_path)
    assert precision.cached_step_speedup(scenario, str(assets.tiny), **args) == 1.25
    assert precision.cached_step_speedup(scenario, str(assets.tiny), **args) == 1.25
    assert calls == [1]
    other = load_scenario(SMOKE, ["framework.batch_size=2"])  # another shape: measured again
    precision.cached_step_speedup(other, str(assets.tiny), **args)
    assert calls == [1, 1]
    stored = [json.loads(p.read_text()) for p in (tmp_path / "precision").glob("*.json")]
    assert sorted(s["batch_size"] for s in stored) == [2, 4]


def test_step_speedup_is_a_real_measurement(assets):
    speedup = precision.measure_step_speedup(load_scenario(SMOKE, []), str(assets.tiny), threads=1, repeats=1)
    assert 0.05 < speedup < 10.0  # emulated bf16 (AVX2-only EPYC): the tiny model measured 0.196-0.2x


def test_bf16_spans_are_dilated_with_the_measured_speedup(assets, tmp_path, monkeypatch):
    from device_profiles import get_device

    monkeypatch.setattr(precision, "cached_step_speedup", lambda *a, **k: 1.6)
    out = _run(tmp_path, "bf16", ["framework.precision=bf16", "framework.rounds=1", "emulation.use_accelerator=false"])
    summary = json.loads((out / "summary.json").read_text())
    cal = summary["calibration"]
    assert cal["bf16_step_speedup"] == 1.6 and summary["precision"] == "bf16"
    rows = pd.read_csv(out / "client_rounds.csv")
    checked = 0
    for row in rows[(rows.outcome == "ok") & (rows.bound == "compute")].itertuples():
        device = get_device(row.device)
        assert row.dilation_factor == pytest.approx(cal["gemm_gflops_fp32"] * 1.6 / device.cpu_gflops, rel=1e-6)
        checked += 1
    assert checked > 0


def test_fp32_runs_measure_no_speedup(assets, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("measured a bf16 speed-up for an fp32 run")

    monkeypatch.setattr(precision, "cached_step_speedup", fail)
    out = _run(tmp_path, "fp32", ["framework.precision=fp32", "framework.rounds=1"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["bf16_step_speedup"] is None and summary["precision"] == "fp32"


def test_auto_runs_what_it_measured(assets, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setattr(precision, "cached_step_speedup", lambda *a, **k: 1.01)
    out = _run(tmp_path, "auto", ["framework.rounds=1"])
    assert json.loads((out / "summary.json").read_text())["precision"] == "fp32"
    assert yaml_precision(out) == "auto"  # the scenario as written keeps the user's setting


def yaml_precision(out):
    import yaml

    return yaml.safe_load((out / "scenario.yaml").read_text())["framework"]["precision"]
