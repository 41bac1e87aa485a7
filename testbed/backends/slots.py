"""Core slots: what the process and docker backends share about running clients' calls.

The host's cores are cut into `parallel` slots of `threads` cores each. A call takes a free
slot, runs with its worker pinned to that slot's cores, and gives the slot back; so at most
`parallel` clients compute at once and parallel clients don't inflate each other's measured
time. Calibration runs in the same slots at the same time, and its rates are averaged (or,
for a data-parallel group computing one client on all its slots, summed).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from statistics import mean
from typing import TypeVar

from testbed.host.calibration import HostCalibration

T = TypeVar("T")


def auto_parallel(n_cores: int, threads: int, memory_limits_bytes: list[int], available_bytes: int) -> int:
    """Workers computing at once: one per `threads` cores, and no more than the host's
    available memory holds at the clients' memory limits (their device RAM budgets)."""
    by_cores = max(1, n_cores // threads)
    if not memory_limits_bytes:
        return by_cores
    return max(1, min(by_cores, int(available_bytes // max(memory_limits_bytes))))


class CoreSlots:
    """`parallel` slots of `threads` host cores; `submit(fn)` runs `fn(cores)` in a free one."""

    def __init__(self, threads: int, parallel: int | None = None, *,
                 memory_limits_bytes: list[int] = (), available_bytes: int | None = None) -> None:
        cores = sorted(os.sched_getaffinity(0))
        if parallel is None:
            import psutil

            available = psutil.virtual_memory().available if available_bytes is None else available_bytes
            parallel = auto_parallel(len(cores), threads, list(memory_limits_bytes), available)
        self.parallel = parallel
        self.cores = [[cores[(k * threads + j) % len(cores)] for j in range(threads)] for k in range(parallel)]
        self._free: queue.Queue[int] = queue.Queue()
        for k in range(parallel):
            self._free.put(k)
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="client-call")

    def submit(self, fn: Callable[[list[int]], T]) -> Future:
        """Queue `fn`; it runs when a slot is free, with that slot's cores."""

        def job() -> T:
            slot = self._free.get()
            try:
                return fn(self.cores[slot])
            finally:
                self._free.put(slot)

        return self._pool.submit(job)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def merge_calibrations(results: list[HostCalibration]) -> HostCalibration:
    """One host calibration from those measured at once in several slots: the mean rates."""
    bf16 = [r.gemm_gflops_bf16 for r in results if r.gemm_gflops_bf16]
    return replace(
        results[0],
        gemm_gflops_fp32=mean(r.gemm_gflops_fp32 for r in results),
        gemm_gflops_bf16=mean(bf16) if bf16 else None,
        mem_bandwidth_gbps=mean(r.mem_bandwidth_gbps for r in results),
    )


def sum_calibrations(results: list[HostCalibration]) -> HostCalibration:
    """One client's host speed from calibrations measured at once in the slots it computes on
    together (a data-parallel group): the summed rates and threads."""
    bf16 = [r.gemm_gflops_bf16 for r in results]
    return replace(
        results[0],
        threads=sum(r.threads for r in results),
        gemm_gflops_fp32=sum(r.gemm_gflops_fp32 for r in results),
        gemm_gflops_bf16=sum(bf16) if all(bf16) else None,
        mem_bandwidth_gbps=sum(r.mem_bandwidth_gbps for r in results),
    )
