"""One persistent OS process per client, pinned to host cores, optionally in a cgroup.

Workers are spawned once and load the model once; each round's fit is sent over a pipe.
At most ``parallel`` workers compute at once, each pinned (all its threads) to its own
slot of host cores, so parallel clients don't inflate each other's measured time; host
calibration runs in the same slots at the same time. Where the host allows, each worker
lives in a cgroup whose memory limit is its device's app RAM budget: an OOM kill there is
that client's recorded failure for the round, and the worker is respawned for the next.
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

import psutil

from testbed.backends.base import Backend
from testbed.backends.slots import CoreSlots, merge_calibrations
from testbed.host.calibration import HostCalibration
from testbed.protocol import Client, ClientSpec, Failure, Outcome

_POLL_S = 0.2
_TRIM_AFTER_S = 0.05  # a worker idle this long after a reply hands its freed heap back


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def worker_main(conn, client_class_path: str, specs: list[ClientSpec], threads: int,
                data_parallel: tuple[int, int, str, float] | None = None, share_heap: bool = True) -> None:
    """The worker process: build its clients once (one, or several in a pool), then serve
    call/calibrate requests. `data_parallel` (rank, world, rendezvous file, timeout s) joins
    it to a group of ranks that split every batch (testbed.ml.dataparallel).

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

    from testbed.backends.base import with_peak_rss
    from testbed.host.calibration import calibrate_host
    from testbed.ml.memory import PeakRssSampler, release_freed_memory

    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        if data_parallel is not None:
            from testbed.ml import dataparallel

            rank, world, store_path, timeout_s = data_parallel
            dataparallel.init(rank, world, store_path, timeout_s=timeout_s)
        clients = {spec.client_id: _load_class(client_class_path)(spec) for spec in specs}
        for client in clients.values():
            client.setup()
        if share_heap:
            gc.freeze()  # the models and data live as long as the worker: no collection walks them
        conn.send(("ready", {"setup_s": time.perf_counter() - t0, "rss_bytes": psutil.Process().memory_info().rss}))
    except Exception:
        conn.send(("setup_error", traceback.format_exc(limit=4)))
        return
    while True:
        cmd, arg = conn.recv()
        if cmd == "stop":
            return
        if cmd == "calibrate":
            conn.send(("calibration", calibrate_host(threads=threads, seconds=arg).to_dict()))
            continue
        cid, method, args = arg
        conn.send(("started", (os.getpid(), psutil.Process().memory_info().rss)))
        t0 = time.perf_counter()
        try:
            with PeakRssSampler() as mem:
                res = getattr(clients[cid], method)(*args)
            conn.send(("ok", with_peak_rss(res, mem.peak_rss_bytes)))
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(exc)).strip()
            conn.send(("error", (detail, time.perf_counter() - t0, mem.peak_rss_bytes)))
        if not conn.poll(_TRIM_AFTER_S):  # idle: hold the model, not the last call's activations
            release_freed_memory()


def worker_context(client_class: type) -> mp.context.BaseContext:
    """The forkserver (testbed.host.forkserver) with the client's module preloaded too."""
    from testbed.host.forkserver import worker_context as forkserver_context

    return forkserver_context((client_class.__module__,))


@dataclass
class _Worker:
    spec: ClientSpec  # its first client (names its process and cgroup)
    specs: list[ClientSpec]  # every client it hosts: one, or several in a pool
    process: mp.process.BaseProcess | None = None
    conn: object | None = None
    cgroup: object | None = None
    setup_error: str | None = None
    timed_out: bool = False


class ProcessBackend(Backend):
    def __init__(self, client_class: type[Client], specs: list[ClientSpec], *, threads: int = 1,
                 parallel: int | None = None, memory_limits_bytes: dict[int, int] | None = None,
                 enforce_memory: bool = True, cpu_quotas: bool = False, calibration_s: float = 1.0, timeout_s: float = 1800.0,
                 setup_timeout_s: float = 600.0, run_id: str = "run", pool: bool = False, **_: object) -> None:
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
            from testbed.host.cgroups import ClientCgroup

            if w.cgroup is None:
                limit = self.memory_limits.get(w.spec.client_id) if self.enforce_memory else None
                w.cgroup = ClientCgroup(f"{self.run_id}-client{w.spec.client_id}",
                                        memory_limit_bytes=limit, cpu_quota_cores=None)
                w.cgroup.create()
            w.cgroup.add(w.process.pid)

    def _wait_ready(self, w: _Worker) -> None:
        reply = self._receive(w, self.setup_timeout_s)
        if reply is None:
            w.setup_error = self._death_detail(w)
        elif reply[0] == "setup_error":
            w.setup_error = reply[1]
            self._reap(w)

    def close(self) -> None:
        self.slots.shutdown()
        for lane in getattr(self, "_lanes", {}).values():
            lane.shutdown(wait=True)
        running = [w for w in self.processes if w.process is not None and w.process.is_alive()]
        for w in running:  # all stop at once, then each is waited for
            try:
                w.conn.send(("stop", None))
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
        from testbed.host.calibration import calibrate_host

        def headroom(w: _Worker) -> float:
            return self.memory_limits.get(w.spec.client_id, float("inf")) if self.enforce_memory else float("inf")

        alive = sorted((w for w in self.processes if self._alive(w)), key=headroom, reverse=True)
        alive = alive[: self.parallel]
        for w, cores in zip(alive, self.slots.cores, strict=False):
            self._pin(w, cores)
            w.conn.send(("calibrate", self.calibration_s))
        replies = [self._receive(w, self.setup_timeout_s) for w in alive]
        results = [HostCalibration.from_dict(r[1]) for r in replies if r is not None and r[0] == "calibration"]
        if not results:
            return calibrate_host(threads=self.threads, seconds=self.calibration_s)
        return merge_calibrations(results)

    # -- rounds ------------------------------------------------------------------------------
    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        """Queue the call; it runs when a core slot is free, pinned to that slot's cores."""
        if self.pool:  # the client's worker, on that worker's own cores, one call at a time
            w = self.workers[cid]
            cores = self.slots.cores[self.processes.index(w)]
            return self._lanes[id(w)].submit(self._call_on, w, rnd, method, args, cores, kill, cid)
        return self.slots.submit(lambda cores: self._call_on(self.workers[cid], rnd, method, args, cores, kill, cid))

    def _call_on(self, w: _Worker, rnd: int, method: str, args: tuple, cores: list[int], kill: bool,
                 cid: int) -> Outcome:
        if not self._alive(w):
            self._respawn(w)
        if w.setup_error is not None:
            return Failure(cid, rnd, self._cause(w, 0), f"client setup failed: {w.setup_error}")
        self._pin(w, cores)
        oom_before = w.cgroup.oom_kills() if w.cgroup is not None else 0
        t0 = time.perf_counter()
        w.conn.send(("call", (cid, method, args)))
        while True:
            reply = self._receive(w, self.timeout_s)
            if reply is None:
                cause = self._cause(w, oom_before)
                return Failure(cid, rnd, cause, self._death_detail(w), host_s=time.perf_counter() - t0)
            if reply[0] == "started" and kill:
                return self._kill_mid_call(w, cid, rnd, t0)
            if reply[0] == "started":
                continue
            if reply[0] == "ok":
                return reply[1]
            detail, host_s, peak = reply[1]
            return Failure(cid, rnd, "error", detail, host_s=host_s, peak_rss_bytes=peak)

    def _kill_mid_call(self, w: _Worker, cid: int, rnd: int, t0: float) -> Failure:
        """Fault injection: SIGKILL the worker once it has started the call; whatever it was
        about to send is lost with it."""
        self._kill(w)
        self._reap(w)
        detail = f"fault injection: {self._death_detail(w)} mid-fit"
        return Failure(cid, rnd, "killed", detail, host_s=time.perf_counter() - t0)

    def _respawn(self, w: _Worker) -> None:
        self._reap(w)
        self._spawn(w)
        self._wait_ready(w)

    # -- process plumbing --------------------------------------------------------------------
    def _receive(self, w: _Worker, timeout_s: float):
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

    def _cause(self, w: _Worker, oom_before: int) -> str:
        if w.cgroup is not None and w.cgroup.oom_kills() > oom_before:
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
