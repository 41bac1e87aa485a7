"""A made-up host calibration for tests that need exact roofline arithmetic."""

from __future__ import annotations

import torch

from testbed.host.calibration import HostCalibration


def fake_host(*, threads: int = 1, seconds_spent: float = 1.0) -> HostCalibration:
    """100 GFLOP/s fp32, 200 GFLOP/s bf16, 20 GB/s: ridge at 5 FLOP/B."""
    return HostCalibration(
        threads=threads,
        gemm_gflops_fp32=100.0,
        gemm_gflops_bf16=200.0,
        mem_bandwidth_gbps=20.0,
        measured_at="2026-01-01T00:00:00+00:00",
        torch_version=torch.__version__,
        cpu_model="Test CPU",
        seconds_spent=seconds_spent,
    )
