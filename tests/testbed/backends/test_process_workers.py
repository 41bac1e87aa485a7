"""ProcessBackend mechanics with a model-free client: external kills, timeouts, errors."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from testbed.backends.process import ProcessBackend
from testbed.config.scenario import load_scenario
from testbed.ml.workload import Workload
from testbed.protocol import Client, ClientSpec, ComputeSpan, Failure, FitIns, FitRes, Payload

SMOKE = Path(__file__).resolve().parents[3] / "scenarios" / "smoke.yaml"


class SleepyClient(Client):
    """Sleeps `seed` tenths of a second per fit; seed 99 raises."""

    def setup(self) -> None:
        self.pid = os.getpid()

    def gc_state(self) -> tuple[bool, int]:
        import gc

        return gc.isenabled(), gc.get_freeze_count()

    def fit(self, ins: FitIns) -> FitRes:
        if ins.seed == 99:
            raise RuntimeError("client bug in fit")
        time.sleep(ins.seed / 10)
        return FitRes(self.spec.client_id, ins.round, (Payload("adapter_up", b"x" * 10),), 1, {},
                      (ComputeSpan("train", ins.seed / 10, Workload(flops=1.0, bytes_moved=1.0)),))


@pytest.fixture()
def backend():
    scenario = load_scenario(SMOKE)
    specs = [ClientSpec(i, scenario, "unused", (0,), threads=1) for i in range(2)]
    b = ProcessBackend(SleepyClient, specs, threads=1, parallel=2, enforce_memory=False,
                       calibration_s=0.05, timeout_s=3.0)
    with b:
        yield b


def _ins(seed: int, rnd: int = 1) -> FitIns:
    return FitIns(round=rnd, payloads=(), seed=seed)


def test_fits_run_in_parallel_workers(backend):
    t0 = time.perf_counter()
    out = backend.fit({0: _ins(10), 1: _ins(10)})
    assert all(isinstance(o, FitRes) for o in out.values())
    assert time.perf_counter() - t0 < 1.9  # two 1 s fits side by side, not one after the other


def test_worker_killed_from_outside_mid_fit_is_a_failure_and_respawns(backend):
    pid = backend.workers[0].process.pid
    threading.Timer(0.5, os.kill, args=(pid, signal.SIGKILL)).start()
    out = backend.fit({0: _ins(20), 1: _ins(1)})
    assert isinstance(out[0], Failure) and out[0].cause == "killed"
    assert "SIGKILL" in out[0].detail and 0.4 < out[0].host_s < 2.0
    assert isinstance(out[1], FitRes)
    again = backend.fit({0: _ins(1, rnd=2)})
    assert isinstance(again[0], FitRes) and backend.workers[0].process.pid != pid


def test_silent_worker_times_out(backend):
    out = backend.fit({0: _ins(60)})  # a 6 s fit against a 3 s timeout
    assert isinstance(out[0], Failure) and out[0].cause == "timeout"


def test_exception_in_fit_is_an_error_failure_and_the_worker_lives_on(backend):
    pid = backend.workers[1].process.pid
    out = backend.fit({1: _ins(99)})
    assert isinstance(out[1], Failure) and out[1].cause == "error"
    assert "client bug in fit" in out[1].detail
    assert backend.workers[1].process.pid == pid and backend.workers[1].process.is_alive()


def test_a_worker_collects_garbage_but_never_walks_the_forkserver_heap(backend):
    import subprocess
    import sys

    from testbed.host.forkserver import PRELOAD

    assert PRELOAD[0] == "testbed.host.zygote"  # the forkserver imports with the collector paused
    paused = subprocess.run([sys.executable, "-c", "import gc, testbed.host.zygote; print(gc.isenabled())"],
                            capture_output=True, text=True, check=True)
    assert paused.stdout.strip() == "False"
    enabled, frozen = backend.submit(0, 1, "gc_state").result()
    assert enabled  # re-enabled in the worker
    assert frozen > 10_000  # torch and the rest, imported before the fork, sit in the permanent generation
