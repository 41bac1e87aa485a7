"""One persistent OS process per client, pinned to host cores, optionally in a cgroup.

Workers are spawned once and load the model once; each round's fit is sent over a pipe.
At most ``parallel`` workers compute at once, each pinned (all its threads) to its own
slot of host cores, so parallel clients don't inflate each other's measured time; host
calibration runs in the same slots at the same time. Where the host allows, each worker
lives in a cgroup whose memory limit is its device's app RAM budget: an OOM kill there is
that client's recorded failure for the round, and the worker is respawned for the next.
The call itself (in flight, killed, timed out, restarted) is testbed.backends.calls' machine;
this module is its pipe-and-process transport.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import time
import traceback
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import psutil

from testbed.backends.base import with_peak_rss
from testbed.backends.calls import Request, WorkerBackend
from testbed.backends.messages import (
    Calibrate,
    Calibrated,
    Call,
    Done,
    Raised,
    Ready,
    Reply,
    SetupError,
    Started,
    Stop,
)
from testbed.backends.slots import CoreSlots, merge_calibrations
from testbed.host.calibration import HostCalibration, calibrate_host
from testbed.host.ownership import owner_tag
from testbed.ml.memory import PeakRssSampler, release_freed_memory
from testbed.protocol import Client, ClientSpec

_POLL_S = 0.2
_TRIM_AFTER_S = 0.05  # a worker idle this long after a reply hands its freed heap back


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


# --- the worker (the child process) ------------------------------------------------------------


def worker_main(conn, client_class_path: str, specs: list[ClientSpec], threads: int,
                data_parallel: tuple[int, int, str, float] | None = None, share_heap: bool = True) -> None:
    """The worker process: build its clients once (one, or several in a pool), then serve
    Call and Calibrate messages until Stop. `data_parallel` (rank, world, rendezvous file,
    timeout s) joins it to a group of ranks that split every batch (testbed.ml.dataparallel).

    `share_heap`: freeze what the forkserver imported (its collector was paused there:
    testbed.host.zygote), so that no collection here walks it (0.2-0.3 s of a rank's
    set-up) or copies its pages. Not where the worker's memory is limited: a device holds its
    whole runtime, so its cgroup must be charged for the pages a collection copies, as
    before the forkserver (a 150 MB limit fits a frozen tiny-model worker, not a real one)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if share_heap:
        gc.freeze()
    gc.enable()
    import torch

    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        clients = _build_clients(client_class_path, specs, data_parallel)
        if share_heap:
            gc.freeze()  # the models and data live as long as the worker: no collection walks them
        conn.send(Ready(setup_s=time.perf_counter() - t0, rss_bytes=psutil.Process().memory_info().rss))
    except Exception:
        conn.send(SetupError(traceback.format_exc(limit=4)))
        return
    _serve(conn, clients, threads)


def _build_clients(client_class_path: str, specs: list[ClientSpec],
                   data_parallel: tuple[int, int, str, float] | None) -> dict[int, Client]:
    """The worker's clients, set up (a data-parallel rank joins its group first)."""
    if data_parallel is not None:
        from testbed.ml import dataparallel

        rank, world, store_path, timeout_s = data_parallel
        dataparallel.init(rank, world, store_path, timeout_s=timeout_s)
    clients = {spec.client_id: _load_class(client_class_path)(spec) for spec in specs}
    for client in clients.values():
        client.setup()
    return clients


def _serve(conn, clients: dict[int, Client], threads: int) -> None:
    """Answer the runner's messages until Stop."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, ConnectionResetError):  # the runner is gone (killed outright): nobody to answer
            return
        if isinstance(message, Stop):
            return
        if isinstance(message, Calibrate):
            conn.send(Calibrated(calibrate_host(threads=threads, seconds=message.seconds).to_dict()))
            continue
        conn.send(Started(os.getpid(), psutil.Process().memory_info().rss))
        _answer(conn, clients, message)
        if not conn.poll(_TRIM_AFTER_S):  # idle: hold the model, not the last call's activations
            release_freed_memory()


def _answer(conn, clients: dict[int, Client], call: Call) -> None:
    """Run the call in this process and send its result with the peak memory; or what it
    raised, sending the result included (a result that cannot be pickled is the call's error)."""
    t0 = time.perf_counter()
    try:
        with PeakRssSampler() as mem:
            res = getattr(clients[call.client_id], call.method)(*call.args)
        conn.send(Done(with_peak_rss(res, mem.peak_rss_bytes)))
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        conn.send(Raised(detail, time.perf_counter() - t0, mem.peak_rss_bytes))


def worker_context(client_class: type) -> mp.context.BaseContext:
    """The forkserver (testbed.host.forkserver) with the client's module preloaded too."""
    from testbed.host.forkserver import worker_context as forkserver_context

    return forkserver_context((client_class.__module__,))


# --- the runner's side -------------------------------------------------------------------------


@dataclass
class _Worker:
    spec: ClientSpec  # its first client (names its process and cgroup)
    specs: list[ClientSpec]  # every client it hosts: one, or several in a pool
    process: mp.process.BaseProcess | None = None
    conn: Any = None  # the runner's end of its pipe
    cgroup: Any = None  # its testbed.host.cgroups.ClientCgroup, where cgroups are enforced
    setup_error: str | None = None
    timed_out: bool = False


class ProcessBackend(WorkerBackend[_Worker]):
    def __init__(self, client_class: type[Client], specs: list[ClientSpec], *, threads: int = 1,
                 parallel: int | None = None, memory_limits_bytes: dict[int, int] | None = None,
                 enforce_memory: bool = True, cpu_quotas: bool = False, calibration_s: float = 1.0,
                 timeout_s: float = 1800.0, setup_timeout_s: float = 600.0, run_id: str = "run", pool: bool = False,
                 **_: object) -> None:
        super().__init__(client_class, specs)
        self.threads = threads
        self.memory_limits = dict(memory_limits_bytes or {})
        self.slots = CoreSlots(threads, parallel, memory_limits_bytes=list(self.memory_limits.values()))
        self.parallel = self.slots.parallel
        self.enforce_memory = enforce_memory
        self.cpu_quotas = cpu_quotas
        self.calibration_s = calibration_s
        self.timeout_s = timeout_s
        self.setup_timeout_s = setup_timeout_s
        self.run_id = run_id
        self.owner_tag = owner_tag()  # this process, and unique: names this backend's cgroups
        self.pool = pool
        if pool:  # `parallel` workers, each hosting every parallel-th client, each with its own cores
            groups = [list(self.specs.values())[k::self.parallel] for k in range(self.parallel)]
            procs = [_Worker(group[0], group) for group in groups if group]
            self.workers = {s.client_id: w for w in procs for s in w.specs}
            self._lanes = {id(w): ThreadPoolExecutor(1, thread_name_prefix=f"worker-{k}") for k, w in enumerate(procs)}
        else:
            self.workers = {cid: _Worker(spec, [spec]) for cid, spec in self.specs.items()}
        self._ctx = worker_context(self.client_class)
        self._launched = False
        self._calibration: HostCalibration | None = None
        self.cgroups_enforced = False

    # -- lifecycle -------------------------------------------------------------------------
    def launch(self) -> None:
        if self._launched:
            return
        self._launched = True
        self.cgroups_enforced = (self.enforce_memory or self.cpu_quotas) and self._cgroups_usable()
        for w in self.processes:
            self._spawn(w)
        for w in self.processes:
            self._wait_ready(w)

    @property
    def processes(self) -> list[_Worker]:
        """The worker processes, each once (a pool's worker hosts several clients)."""
        return list({id(w): w for w in self.workers.values()}.values())

    def start(self) -> None:
        self.launch()
        self._calibration = self._calibrate()

    def _cgroups_usable(self) -> bool:
        from testbed.host.cgroups import detect

        support = detect()
        if not support.memory_writable:
            warnings.warn(f"cgroups unavailable, memory limits are measured, not enforced: {support.reason}",
                          stacklevel=2)
        return support.memory_writable

    def _worker_args(self, w: _Worker) -> tuple:
        """worker_main's arguments after its pipe end."""
        return (_class_path(self.client_class), w.specs, self.threads, None, not self.enforce_memory)

    def _spawn(self, w: _Worker) -> None:
        parent, child = self._ctx.Pipe()
        w.process = self._ctx.Process(
            target=worker_main, args=(child, *self._worker_args(w)),
            name="clients-" + "-".join(str(s.client_id) for s in w.specs), daemon=True,
        )
        w.process.start()
        child.close()
        w.conn, w.setup_error = parent, None
        if self.cgroups_enforced:
            self._enter_cgroup(w)

    def _enter_cgroup(self, w: _Worker) -> None:
        """Put the worker's process in its client's cgroup (made on first use)."""
        from testbed.host.cgroups import ClientCgroup

        if w.cgroup is None:
            limit = self.memory_limits.get(w.spec.client_id) if self.enforce_memory else None
            w.cgroup = ClientCgroup(self.cgroup_name(w.spec.client_id), memory_limit_bytes=limit,
                                    cpu_quota_cores=None)
            w.cgroup.create()
        w.cgroup.add(w.process.pid)

    def cgroup_name(self, client_id: int) -> str:
        """The name of a client's cgroup (ClientCgroup adds the testbed- prefix): unique to this
        backend, and recording this process as its owner, so that the next start removes it
        if this run is killed (testbed.host.cleanup)."""
        return f"{self.owner_tag}-{self.run_id}-client{client_id}"

    def close(self) -> None:
        self.slots.shutdown()
        for lane in getattr(self, "_lanes", {}).values():
            lane.shutdown(wait=True)
        running = [w for w in self.processes if w.process is not None and w.process.is_alive()]
        for w in running:  # all stop at once, then each is waited for
            try:
                self._send(w, Stop())
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for w in running:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
        for w in self.processes:
            if w.cgroup is not None:
                w.cgroup.remove()

    def set_cpu_quotas(self, quotas: dict[int, float]) -> dict[int, float]:
        """Throttle workers to `quotas` (cores); returns the quotas actually applied."""
        applied = {}
        for cid, cores in quotas.items():
            cgroup = self.workers[cid].cgroup
            if cgroup is not None:
                cgroup.set_cpu_quota(cores)
                applied[cid] = cores
        return applied

    # -- calibration -------------------------------------------------------------------------
    def _calibrate(self) -> HostCalibration:
        """Calibrate in `parallel` workers at once, in their slots: those with the most memory
        headroom (calibration allocates ~0.5 GB). A worker its limit kills here is left for
        the next call to respawn; with none left, the runner's process calibrates."""
        def headroom(w: _Worker) -> float:
            return self.memory_limits.get(w.spec.client_id, float("inf")) if self.enforce_memory else float("inf")

        alive = sorted((w for w in self.processes if self._alive(w)), key=headroom, reverse=True)
        return self._calibrate_in(alive[: self.parallel], self.setup_timeout_s, threads=self.threads,
                                  combine=merge_calibrations)

    # -- rounds ------------------------------------------------------------------------------
    def _schedule(self, request: Request) -> Future:
        """In a pool, the client's worker runs its calls one at a time, on that worker's own cores."""
        if not self.pool:
            return super()._schedule(request)
        w = self.workers[request.client_id]
        cores = self.slots.cores[self.processes.index(w)]
        return self._lanes[id(w)].submit(self._run, request, cores)

    def _oom_mark(self, w: _Worker) -> int:
        return w.cgroup.oom_kills() if w.cgroup is not None else 0

    # -- the pipe and the process ------------------------------------------------------------
    def _send(self, w: _Worker, message: Any) -> None:
        w.conn.send(message)

    def _receive(self, w: _Worker, timeout_s: float) -> Reply | None:
        """The worker's next message, or None once it died or stayed silent for timeout_s."""
        deadline = time.monotonic() + timeout_s
        died = False
        while time.monotonic() < deadline:
            try:
                if w.conn.poll(_POLL_S):
                    return w.conn.recv()
            except (EOFError, OSError):  # its end of the pipe closed: it is dying
                died = True
                break
            if not w.process.is_alive():
                died = True
                break
        if not died:  # silent past the deadline
            self._kill(w)
            w.timed_out = True
        self._reap(w)
        return None

    def _alive(self, w: _Worker) -> bool:
        return w.process is not None and w.process.is_alive() and w.setup_error is None

    def _kill(self, w: _Worker) -> None:
        if w.process is not None and w.process.is_alive():
            os.kill(w.process.pid, signal.SIGKILL)

    def _reap(self, w: _Worker) -> None:
        if w.process is not None:
            w.process.join(timeout=10)

    def _discard(self, w: _Worker) -> None:
        """A dead process needs only reaping before its successor starts."""
        self._reap(w)

    def _await_exit(self, w: _Worker) -> None:
        self._reap(w)

    def _cause(self, w: _Worker, mark: int) -> str:
        """`mark`: the cgroup's OOM kills before the call."""
        if w.cgroup is not None and w.cgroup.oom_kills() > mark:
            return "oom"
        if w.timed_out:
            w.timed_out = False
            return "timeout"
        code = w.process.exitcode if w.process is not None else None
        if code is not None and code < 0:
            return "killed"
        return "crashed"

    def _death_detail(self, w: _Worker) -> str:
        code = w.process.exitcode if w.process is not None else None
        if code is not None and code < 0:
            return f"worker killed by {signal.Signals(-code).name}"
        return f"worker exited with code {code}"

    def _pin(self, w: _Worker, cores: list[int]) -> None:
        """Pin every thread of the worker (torch's pool included) to `cores`."""
        try:
            for t in psutil.Process(w.process.pid).threads():
                os.sched_setaffinity(t.id, cores)
        except (psutil.Error, OSError):
            pass  # the worker just died; the fit reports it
