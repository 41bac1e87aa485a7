"""Measure this host: its sustained matmul rate and memory bandwidth (the host's roofline).

A client's work runs, and is timed, on the host. To say how long it would take on an edge
device, both machines are described by a roofline (Williams, Waterman, Patterson, CACM 2009):
the GFLOP/s a piece of work can attain is ``min(peak GFLOP/s, intensity x bandwidth)``, where
the arithmetic intensity is the work's FLOPs per byte moved to and from memory. Then

    device_s = host_s x host_attainable_gflops / device_attainable_gflops

The host's two roofline numbers come from ``calibrate_host`` (a matmul rate and a tensor copy
rate, measured with the thread count the clients use); the device's come from its profile.
Bandwidths are in GB/s of bytes (1e9 bytes/s), FLOP rates in GFLOP/s (1e9 FLOP/s).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from testbed.host.cpu import cpu_model, native_bf16
from testbed.config.wiretypes import wire_type

# (M, K, N) of the timed matmuls: a 576-wide model's MLP projection over 768 tokens, and 1024^3.
GEMM_SHAPES: tuple[tuple[int, int, int], ...] = ((768, 576, 1536), (1024, 1024, 1024))
COPY_BYTES = 128 * 2**20  # size of the copied tensor (4x a 32 MiB L3: DRAM-bound); a copy moves twice this
_BUDGET_SHARES = {"fp32": 0.4, "bf16": 0.25, "copy": 0.35}  # of calibrate_host's `seconds`
CACHE_FORMAT = "testbed-host-calibration/1"



# --- The host's numbers ---------------------------------------------------------------------


@wire_type("HostCalibration")
@dataclass(frozen=True)
class HostCalibration:
    threads: int  # torch intra-op threads the rates were measured with
    gemm_gflops_fp32: float  # sustained fp32 matmul rate, GFLOP/s
    gemm_gflops_bf16: float | None  # bf16 matmul rate, GFLOP/s; None when torch cannot run it here
    mem_bandwidth_gbps: float  # tensor copy rate, GB/s (bytes read + bytes written, 1e9 B/s)
    measured_at: str  # when, ISO 8601 with UTC offset
    torch_version: str
    cpu_model: str
    seconds_spent: float  # wall time the measurement took
    # fp32 time / bf16-autocast time of a real training step of the run's model (testbed.host.precision);
    # None when not measured. bf16 work is dilated with gemm_gflops_fp32 x this, not with the bf16
    # GEMM rate: a training step under autocast is far from all-bf16 matmuls.
    bf16_step_speedup: float | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f'"threads" must be >= 1, got {self.threads}.')
        for name in ("gemm_gflops_fp32", "mem_bandwidth_gbps"):
            if not getattr(self, name) > 0:
                raise ValueError(f'"{name}" must be > 0, got {getattr(self, name)}.')
        if self.gemm_gflops_bf16 is not None and not self.gemm_gflops_bf16 > 0:
            bf16 = self.gemm_gflops_bf16
            raise ValueError(f'"gemm_gflops_bf16" must be > 0 or None, got {bf16}.')
        if self.bf16_step_speedup is not None and not self.bf16_step_speedup > 0:
            raise ValueError(f'"bf16_step_speedup" must be > 0 or None, got {self.bf16_step_speedup}.')
        _parse_time(self.measured_at)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostCalibration:
        names = {f.name for f in fields(cls)}
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        unknown, missing = sorted(set(data) - names), sorted(names - optional - set(data))
        if unknown or missing:
            raise ValueError(f"HostCalibration: unknown keys {unknown}, missing keys {missing}")
        return cls(**data)

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since the measurement."""
        now = now or datetime.now(timezone.utc)
        return (now - _parse_time(self.measured_at)).total_seconds()


def _parse_time(iso: str) -> datetime:
    try:
        t = datetime.fromisoformat(iso)
    except (TypeError, ValueError) as e:
        raise ValueError(f'"measured_at" must be an ISO 8601 time, got {iso!r}.') from e
    if t.tzinfo is None:
        raise ValueError(f'"measured_at" must carry a UTC offset, got {iso!r}.')
    return t


# --- Measuring ------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _affinity(cpus: list[int] | None) -> Iterator[None]:
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _timed_runs_s(run: Callable[[], object], budget_s: float) -> list[float]:
    """Durations of ``run`` after one warm-up call, repeated until ``budget_s`` (at least once)."""
    run()
    durations: list[float] = []
    while sum(durations) < budget_s:
        start = time.perf_counter()
        run()
        durations.append(time.perf_counter() - start)
    return durations


def _gemm_gflops(dtype: torch.dtype, budget_s: float) -> float:
    """Mean over GEMM_SHAPES of each shape's median matmul rate."""
    generator = torch.Generator().manual_seed(0)
    medians = []
    for m, k, n in GEMM_SHAPES:
        a = torch.randn(m, k, generator=generator).to(dtype)  # (M, K)
        b = torch.randn(k, n, generator=generator).to(dtype)  # (K, N)
        out = torch.empty(m, n, dtype=dtype)  # (M, N)
        durations = _timed_runs_s(lambda: torch.mm(a, b, out=out), budget_s / len(GEMM_SHAPES))
        medians.append(2.0 * m * k * n / statistics.median(durations) / 1e9)
    return statistics.fmean(medians)


def _bf16_gflops(budget_s: float) -> float | None:
    try:
        return _gemm_gflops(torch.bfloat16, budget_s)
    except RuntimeError:  # no bf16 matmul kernel for this CPU / build
        return None


def _copy_gbps(budget_s: float) -> float:
    """Median rate of a COPY_BYTES tensor copy, counting bytes read plus bytes written."""
    src = torch.ones(COPY_BYTES // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    durations = _timed_runs_s(lambda: dst.copy_(src), budget_s)
    return 2.0 * COPY_BYTES / statistics.median(durations) / 1e9


def calibrate_host(
    *, threads: int, seconds: float = 2.0, cpu_affinity: list[int] | None = None, bf16: bool | None = None
) -> HostCalibration:
    """Measure matmul (fp32, bf16) and memory copy rates with ``threads`` torch threads.

    ``seconds`` is the timing budget (warm-ups and allocation come on top). The torch thread
    count and, when ``cpu_affinity`` is given, the CPU affinity are restored afterwards.
    ``bf16`` None measures the bf16 rate only where the CPU multiplies bf16 natively: emulated
    bf16 runs at a few GFLOP/s (its warm-up alone took seconds on an AVX2-only EPYC) and no
    run uses it, since bf16 work is dilated with a measured training step's speed-up.
    """
    if threads < 1:
        raise ValueError(f'"threads" must be >= 1, got {threads}.')
    if not seconds > 0:
        raise ValueError(f'"seconds" must be > 0, got {seconds}.')
    if bf16 is None:
        bf16 = native_bf16()
    start = time.perf_counter()
    with _torch_threads(threads), _affinity(cpu_affinity):
        fp32 = _gemm_gflops(torch.float32, seconds * _BUDGET_SHARES["fp32"])
        bf16 = _bf16_gflops(seconds * _BUDGET_SHARES["bf16"]) if bf16 else None
        bandwidth = _copy_gbps(seconds * _BUDGET_SHARES["copy"])
    return HostCalibration(
        threads=threads,
        gemm_gflops_fp32=fp32,
        gemm_gflops_bf16=bf16,
        mem_bandwidth_gbps=bandwidth,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__,
        cpu_model=cpu_model(),
        seconds_spent=time.perf_counter() - start,
    )


# --- Cache ----------------------------------------------------------------------------------


def _cache_key(threads: int, model: str) -> str:
    return f"{model}|threads={threads}"


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """The cache's entries ({} when the file does not exist yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        problem = f"unreadable calibration cache ({e}); delete it to re-measure"
        raise ValueError(f"{path}: {problem}") from e
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: not a {CACHE_FORMAT} file; delete it to re-measure")
    return dict(data["entries"])


def _write_cache(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=2) + "\n")
    os.replace(tmp, path)  # readers never see half a file


def load_or_calibrate(
    path: Path, *, threads: int, max_age_s: float = 7 * 86400, seconds: float = 2.0
) -> HostCalibration:
    """The cached calibration for this CPU model and thread count; measured when missing,
    older than ``max_age_s`` or taken with another torch version."""
    entries = _read_cache(path)
    key = _cache_key(threads, cpu_model())
    if key in entries:
        cached = HostCalibration.from_dict(entries[key])
        if cached.age_s() <= max_age_s and cached.torch_version == torch.__version__:
            return cached
    fresh = calibrate_host(threads=threads, seconds=seconds)
    _write_cache(path, {**_read_cache(path), key: fresh.to_dict()})
    return fresh
