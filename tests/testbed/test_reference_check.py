"""Roofline decode predictions beside the published small-LLM speeds."""

from __future__ import annotations

import pytest
from fake_hosts import fake_host
from rich.console import Console

from testbed.host.calibration import HostCalibration
from testbed.results.reference_check import (
    PUBLISHED,
    PublishedFigure,
    compare_with_published,
    decode_roofline,
    format_predictions,
    host_estimate,
)

HOST = fake_host(threads=1, seconds_spent=0.5)


def _one(device: str, model: str):
    [pred] = [p for p in compare_with_published(HOST) if p.device == device and p.model == model]
    return pred


def test_orin_nano_smollm2_is_memory_bound_by_hand() -> None:
    # jetson-orin-nano: GPU 640 GFLOP/s, 68 GB/s; SmolLM2-135M, N = 134,515,008, INT4 0.5 B/w.
    # compute roof: 640e9 / (2 * 134,515,008) = 2378.96 tok/s
    # memory roof:   68e9 / (0.5 * 134,515,008) = 1011.04 tok/s  -> memory-bound
    pred = _one("jetson-orin-nano", "SmolLM2-135M")
    assert pred.peak_gflops == 640.0 and pred.mem_bandwidth_gbps == 68.0
    assert pred.predicted_tok_s == pytest.approx(1011.04, abs=0.01)
    assert pred.bound == "memory"
    assert pred.ratio == pytest.approx(41.0 / 1011.04, rel=1e-4)


def test_raspberry_pi_5_llama_3b_is_compute_bound_by_hand() -> None:
    # raspberry-pi-5: CPU 60.4 GFLOP/s, 17.07 GB/s; Llama-3.2-3B, N = 3,212,749,824, q4 0.5 B/w.
    # compute roof: 60.4e9 / (2 * 3,212,749,824) = 9.400 tok/s  -> compute-bound (ridge 3.54 < 4)
    # memory roof: 17.07e9 / (0.5 * 3,212,749,824) = 10.627 tok/s
    pred = _one("raspberry-pi-5", "llama3.2:3b")
    assert pred.predicted_tok_s == pytest.approx(9.400, abs=0.001)
    assert pred.bound == "compute"
    assert pred.ratio == pytest.approx(4.6 / 9.400, rel=1e-3)


def test_prediction_does_not_depend_on_the_host() -> None:
    changed = {"gemm_gflops_fp32": 3.0, "mem_bandwidth_gbps": 90.0}
    other = HostCalibration(**{**HOST.to_dict(), **changed})
    a, b = compare_with_published(HOST), compare_with_published(other)
    assert [p.predicted_tok_s for p in a] == pytest.approx([p.predicted_tok_s for p in b])


def test_every_prediction_has_a_source_and_a_positive_ratio() -> None:
    preds = compare_with_published(HOST)
    assert len(preds) == len(PUBLISHED)
    devices = {p.device for p in preds}
    assert {"jetson-orin-nano", "jetson-orin-nano-super", "raspberry-pi-5", "galaxy-s24"} <= devices
    for p in preds:
        assert p.source.strip() and p.runtime and p.model and p.quantization
        assert p.published_tok_s > 0 and p.predicted_tok_s > 0 and p.ratio > 0
        assert p.ratio == pytest.approx(p.published_tok_s / p.predicted_tok_s)
        assert p.bound in ("compute", "memory")


def test_decode_roofline_matches_the_min_formula() -> None:
    n, bpw, peak, bw = 1_000_000, 2.0, 10.0, 4.0
    tok_s, bound = decode_roofline(
        peak_gflops=peak, mem_bandwidth_gbps=bw, model_params=n, bytes_per_weight=bpw
    )
    assert tok_s == pytest.approx(min(peak * 1e9 / (2 * n), bw * 1e9 / (n * bpw)))
    assert bound == "memory"


def test_host_estimate_by_hand() -> None:
    # 100 GFLOP/s fp32, 20 GB/s, N = 134,515,008 at 4 B/w:
    # decode memory roof 20e9 / (4N) = 37.17 tok/s (compute roof 371.7) -> memory-bound
    # 768-token forward: intensity 384 FLOP/B -> compute roof 100e9 / (2N) = 371.7 tok/s
    est = host_estimate(HOST)
    assert est.decode_tok_s == pytest.approx(37.17, abs=0.01)
    assert est.decode_bound == "memory"
    assert est.prefill_tok_s == pytest.approx(371.70, abs=0.01)
    assert est.prefill_bound == "compute"


def test_format_predictions_renders_every_row() -> None:
    preds = compare_with_published(HOST)
    table = format_predictions(preds, host_estimate(HOST))
    assert table.row_count == len(preds)
    console = Console(width=250, record=True)
    console.print(table)
    text = console.export_text()
    assert "jetson-orin-nano-super" in text and "This host" in text


def test_unknown_device_is_an_error() -> None:
    bad = PublishedFigure("no-such-device", 1.0, "x", "r", "m", "q", 10, 0.5, "cpu")
    with pytest.raises(ValueError):
        compare_with_published(HOST, figures=[bad])


def test_calibrate_command_prints_and_compares(capsys):
    import json

    from testbed.cli.main import main

    assert main(["calibrate", "--seconds", "0.1", "--compare"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["gemm_gflops_fp32"] > 0
    assert "jetson-orin-nano" in captured.err and "raspberry-pi-5" in captured.err
