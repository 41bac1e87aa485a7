"""One client at a time, its batches split across single-thread processes (testbed.ml.dataparallel).

`world` ranks, each pinned to a core of its own with one torch thread, and each hosting every
client (their frozen weights are one shared mapping). A call runs on all ranks at once and
rank 0's result is the client's; the ranks sum their gradients every step, so they hold the
same adapters throughout. A rank that dies, fails or goes silent fails the call for the
whole client; the others are stopped (they would wait for it in the next all-reduce), and
the group is started again for the next call, since a torch.distributed group cannot take a
new member. Only where no per-client limit applies (enforce_memory false, time dilate).

A client's `peak_rss_mb` is rank 0's peak plus every other rank's growth during the call:
one copy of the process and model, and the activations of every share of the batch.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import wait

from testbed.backends.base import with_peak_rss
from testbed.backends.messages import Call, Raised, Started
from testbed.backends.process import _POLL_S, ProcessBackend, _class_path, _Worker
from testbed.backends.slots import sum_calibrations
from testbed.host.calibration import HostCalibration
from testbed.host.ownership import owned_tempdir
from testbed.protocol import Client, ClientSpec, Failure, Outcome


class DataParallelBackend(ProcessBackend):
    def __init__(self, client_class: type[Client], specs: list[ClientSpec], *, threads: int = 2,
                 calibration_s: float = 1.0, timeout_s: float = 1800.0, setup_timeout_s: float = 600.0,
                 run_id: str = "run", **_: object) -> None:
        if threads < 2:
            raise ValueError(f"a data-parallel group needs at least 2 ranks, got threads={threads}")
        super().__init__(client_class, specs, threads=1, parallel=threads, enforce_memory=False,
                         cpu_quotas=False, calibration_s=calibration_s, timeout_s=timeout_s,
                         setup_timeout_s=setup_timeout_s, run_id=run_id)
        self.world = threads
        self.parallel = 1  # clients computing at once: one, on every rank's core
        every = list(self.specs.values())
        self.ranks = [_Worker(every[0], every) for _ in range(self.world)]
        self.workers = {cid: self.ranks[0] for cid in self.specs}
        self._lane = ThreadPoolExecutor(1, thread_name_prefix="dp-group")
        self._rendezvous = str(owned_tempdir("dp"))  # a killed run's is removed at the next start
        self._generation = 0  # a new rendezvous file each time the group starts

    @property
    def processes(self) -> list[_Worker]:
        return self.ranks

    def _worker_args(self, w: _Worker) -> tuple:
        store = f"{self._rendezvous}/group-{self._generation}"
        rank = self.ranks.index(w)
        return (_class_path(self.client_class), w.specs, 1, (rank, self.world, store, self.timeout_s))

    def _restart(self) -> None:
        """Stop what is left of the group and start all ranks again."""
        for w in self.ranks:
            self._kill(w)
            self._reap(w)
        self._generation += 1
        for w in self.ranks:
            self._spawn(w)
        for w in self.ranks:
            self._wait_ready(w)

    def close(self) -> None:
        self._lane.shutdown(wait=True)
        super().close()
        shutil.rmtree(self._rendezvous, ignore_errors=True)

    def facts(self) -> dict:
        return {"data_parallel_ranks": self.world}

    # -- calibration -------------------------------------------------------------------------
    def _calibrate(self) -> HostCalibration:
        """Every rank measures its core at once; the client computes on all of them, so its
        host rate is their sum. Without every rank's answer the runner measures `world`
        intra-op threads instead."""
        alive = [w for w in self.ranks if self._alive(w)]
        return self._calibrate_in(alive, self.setup_timeout_s, threads=self.world, combine=sum_calibrations,
                                  needed=self.world)

    # -- rounds ------------------------------------------------------------------------------
    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        return self._lane.submit(self._group_call, cid, rnd, method, args, kill)

    def _group_call(self, cid: int, rnd: int, method: str, args: tuple, kill: bool) -> Outcome:
        if not all(self._alive(w) for w in self.ranks):
            self._restart()
        error = next((w.setup_error for w in self.ranks if w.setup_error is not None), None)
        if error is not None:
            return Failure(cid, rnd, "crashed", f"client setup failed: {error}")
        for w, cores in zip(self.ranks, self.slots.cores, strict=True):
            self._pin(w, cores)
        t0 = time.perf_counter()
        for w in self.ranks:
            self._send(w, Call(cid, method, args))
        outcome = self._gather(cid, rnd, kill, t0)
        if isinstance(outcome, Failure):  # the others may wait for the failed rank: stop them all
            for w in self.ranks:
                self._kill(w)
                self._reap(w)
        return outcome

    def _gather(self, cid: int, rnd: int, kill: bool, t0: float) -> Outcome:
        """Every rank's reply to the call, or the first failure among them."""
        pending = dict(enumerate(self.ranks))
        start_rss: dict[int, int] = {}
        results: dict[int, object] = {}
        deadline = time.monotonic() + self.timeout_s
        while pending:
            if time.monotonic() > deadline:
                return Failure(cid, rnd, "timeout", f"a rank stayed silent for {self.timeout_s:.0f} s",
                               host_s=time.perf_counter() - t0)
            ready = wait([w.conn for w in pending.values()], timeout=_POLL_S)
            for k, w in list(pending.items()):
                if w.conn not in ready:
                    if not w.process.is_alive():
                        return Failure(cid, rnd, self._cause(w, 0), f"rank {k}: {self._death_detail(w)}",
                                       host_s=time.perf_counter() - t0)
                    continue
                try:
                    reply = w.conn.recv()
                except (EOFError, OSError):
                    self._reap(w)
                    return Failure(cid, rnd, self._cause(w, 0), f"rank {k}: {self._death_detail(w)}",
                                   host_s=time.perf_counter() - t0)
                if isinstance(reply, Started):
                    start_rss[k] = reply.rss_bytes
                    if kill and len(start_rss) == self.world:  # fault injection, once all have started
                        return Failure(cid, rnd, "killed", "fault injection: every rank killed mid-fit",
                                       host_s=time.perf_counter() - t0)
                    continue
                del pending[k]
                if isinstance(reply, Raised):
                    return Failure(cid, rnd, "error", f"rank {k}: {reply.detail}", host_s=reply.host_s,
                                   peak_rss_bytes=reply.peak_rss_bytes)
                results[k] = reply.result
        peak = getattr(results[0], "peak_rss_bytes", 0)
        peak += sum(max(0, getattr(results[k], "peak_rss_bytes", 0) - start_rss.get(k, 0))
                    for k in range(1, self.world))
        return with_peak_rss(results[0], peak)
