"""Turn host compute time into device compute time with a roofline.

Both machines are described by a roofline (Williams, Waterman, Patterson, CACM 2009): the
GFLOP/s a piece of work can attain is ``min(peak GFLOP/s, intensity x bandwidth)``, where the
arithmetic intensity is the work's FLOPs per byte moved. Then

    device_s = host_s x host_attainable_gflops / device_attainable_gflops

The host's numbers come from testbed.host.calibration, the device's from its profile, the
work's from testbed.ml.workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from testbed.host.calibration import HostCalibration
from testbed.ml.workload import Workload, positive


@dataclass(frozen=True)
class Dilation:
    host_s: float  # measured host compute time
    device_s: float  # the same work on the device
    factor: float  # device_s / host_s
    bound: Literal["compute", "memory"]  # which roof limits the device at this intensity
    host_attainable_gflops: float
    device_attainable_gflops: float


def roofline_gflops(
    peak_gflops: float, bandwidth_gbps: float, intensity_flop_per_byte: float
) -> float:
    """Attainable GFLOP/s: ``min(peak, intensity x bandwidth)``."""
    positive("peak_gflops", peak_gflops)
    positive("bandwidth_gbps", bandwidth_gbps)
    positive("intensity_flop_per_byte", intensity_flop_per_byte)
    return min(peak_gflops, intensity_flop_per_byte * bandwidth_gbps)


def host_peak_gflops(host: HostCalibration, precision: Literal["fp32", "bf16"]) -> float:
    if precision == "fp32":
        return host.gemm_gflops_fp32
    if precision == "bf16":
        if host.bf16_step_speedup is not None:  # measured on the real step: the honest rate
            return host.gemm_gflops_fp32 * host.bf16_step_speedup
        if host.gemm_gflops_bf16 is None:
            raise ValueError('"precision" is "bf16" but the host calibration has no bf16 rate.')
        return host.gemm_gflops_bf16
    raise ValueError(f'"precision" must be "fp32" or "bf16", got {precision!r}.')


def dilate(
    host_s: float,
    *,
    workload: Workload,
    host: HostCalibration,
    device_gflops: float,
    device_mem_bandwidth_gbps: float,
    precision: Literal["fp32", "bf16"] = "fp32",
    runtime_efficiency: float = 1.0,
) -> Dilation:
    """Device time of work that took ``host_s`` on the host (``device_gflops`` at ``precision``).

    ``runtime_efficiency`` is the fraction of its roofline rate the device's training runtime
    attains next to PyTorch on the host (a profile's ``training_efficiency``; 1.0: the same)."""
    positive("host_s", host_s)
    positive("device_gflops", device_gflops)
    positive("device_mem_bandwidth_gbps", device_mem_bandwidth_gbps)
    positive("runtime_efficiency", runtime_efficiency)
    intensity = workload.arithmetic_intensity
    host_peak = host_peak_gflops(host, precision)
    host_att = roofline_gflops(host_peak, host.mem_bandwidth_gbps, intensity)
    device_att = roofline_gflops(device_gflops, device_mem_bandwidth_gbps, intensity) * runtime_efficiency
    factor = host_att / device_att
    bound: Literal["compute", "memory"] = (
        "compute" if device_gflops <= intensity * device_mem_bandwidth_gbps else "memory"
    )
    return Dilation(host_s, host_s * factor, factor, bound, host_att, device_att)
