"""`emulation.backend: ray`: each client in a Ray actor, on a local Ray or a running cluster.

The actor builds its client once, then answers calls one at a time, with the Ray node that
computed each (`host`) and the peak RSS measured around it. The clock stays in the runner.

Placement and pacing: the backend places each actor on a node (testbed.backends.ray_cluster
plans it; node affinity holds it there), and at most a node's slots (its CPUs / the clients'
threads) of calls compute on it at once, so parallel clients don't inflate each other's
measured time.

What Ray does not enforce is measured: with `enforce_memory`, a call whose peak RSS exceeds
the budget is an `oom` Failure. An actor that dies mid-call (killed, crashed, node lost) is
the call's Failure; a fresh actor, its state lost, takes the next call. See docs/ray.md.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, fields, replace
from typing import Any

from testbed.backends.base import Backend, with_peak_rss
from testbed.backends.ray_cluster import (
    Placement,
    RayNode,
    alive_nodes,
    connect,
    death_of,
    first_line,
    import_ray,
    node_slots,
    plan_placement,
)
from testbed.backends.slots import merge_calibrations
from testbed.config.scenario import ScenarioError
from testbed.host.calibration import HostCalibration, calibrate_host
from testbed.ml.memory import PeakRssSampler, release_freed_memory
from testbed.protocol import Client, ClientSpec, Failure, Outcome

_PROBE_S = 0.02  # how often fault injection asks whether the call has started
_EXIT_WAIT_S = 30.0  # for a killed actor's call to report its death


# --- the actor (in a Ray worker process) --------------------------------------------------------


def _on_node(result: Any, node_id: str) -> Any:
    """The result with its `host` field set to the Ray node, where it has one."""
    has_host = hasattr(result, "__dataclass_fields__") and "host" in {f.name for f in fields(result)}
    return replace(result, host=node_id) if has_host else result


class ClientActor:
    """One client in a Ray worker, set up once; its calls one at a time, `probe` beside them."""

    def __init__(self, client_class: bytes, spec: ClientSpec, threads: int, budget_bytes: int | None,
                 enforce_memory: bool) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the client's module imports transformers
        import ray
        import torch
        from ray import cloudpickle

        torch.set_num_threads(threads)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.threads, self.budget_bytes, self.enforce_memory = threads, budget_bytes, enforce_memory
        self.started = 0
        self.setup_error: str | None = None
        try:
            self.client: Client = cloudpickle.loads(client_class)(spec)
            self.client.setup()
        except Exception:
            self.setup_error = traceback.format_exc(limit=4)

    def ready(self) -> tuple[str, str | None]:
        return self.node_id, self.setup_error

    def probe(self) -> int:  # the last call begun
        return self.started

    def calibrate(self, seconds: float) -> dict:
        return calibrate_host(threads=self.threads, seconds=seconds).to_dict()

    def call(self, seq: int, method: str, args: tuple) -> tuple:
        """("done", result) | ("raised", detail, host_s, peak) | ("oom", host_s, peak)."""
        self.started = seq
        release_freed_memory()  # hold the model, not the last call's activations
        t0 = time.perf_counter()
        try:
            with PeakRssSampler() as mem:
                res = getattr(self.client, method)(*args)
        except Exception as exc:  # the client's error is the call's Failure, the actor lives on
            detail = "".join(traceback.format_exception_only(exc)).strip()
            return ("raised", detail, time.perf_counter() - t0, mem.peak_rss_bytes)
        if self.enforce_memory and self.budget_bytes and mem.peak_rss_bytes > self.budget_bytes:
            return ("oom", time.perf_counter() - t0, mem.peak_rss_bytes)
        return ("done", _on_node(with_peak_rss(res, mem.peak_rss_bytes), self.node_id))


# --- the runner's side ----------------------------------------------------------------------------


@dataclass
class _Actor:
    spec: ClientSpec
    placement: Placement
    handle: Any = None  # the Ray actor handle; None once it died (the next call makes another)
    node_id: str = ""  # where it runs, as it reported
    setup_error: str | None = None
    seq: int = 0  # calls sent
    lock: threading.Lock = field(default_factory=threading.Lock)  # one call at a time


class RayBackend(Backend):
    def __init__(self, client_class: type[Client], specs: list[ClientSpec], *, threads: int = 1,
                 parallel: int | None = None, memory_limits_bytes: dict[int, int] | None = None,
                 enforce_memory: bool = True, calibration_s: float = 1.0, timeout_s: float = 1800.0,
                 setup_timeout_s: float = 600.0, **_: object) -> None:
        super().__init__(client_class, specs)
        self.ray = import_ray()
        self.threads, self.limit = threads, parallel  # limit: emulation.parallel_clients, calls at once in all
        self.budgets = dict(memory_limits_bytes or {})
        self.enforce_memory = enforce_memory
        self.calibration_s, self.timeout_s, self.setup_timeout_s = calibration_s, timeout_s, setup_timeout_s
        self.address = specs[0].scenario.emulation.ray.address if specs else None
        self.actors: dict[int, _Actor] = {}
        self.nodes: list[RayNode] = []
        self.parallel = 1
        self._slots: dict[str, int] = {}  # node -> calls computing there at once
        self._gates: dict[str, threading.Semaphore] = {}
        self._limit_gate = threading.Semaphore(max(1, len(specs)))
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(specs)), thread_name_prefix="ray-call")
        self._calibration: HostCalibration | None = None
        self._launched = False
        # here, on the runner's main thread: a local Ray's processes end with the thread that started them
        self._owns_connection = connect(self.ray, self.address, ("torch", client_class.__module__))
        self._actor_class = self.ray.remote(ClientActor)

    # -- lifecycle -------------------------------------------------------------------------
    def launch(self) -> None:
        """Plan the placement and create every client's actor; wait until each is set up."""
        if self._launched:
            return
        self._launched = True
        self.nodes = alive_nodes(self.ray)
        if not self.nodes:
            raise ScenarioError(f"emulation.ray.address: {self.address or 'the local Ray'} has no node with CPUs")
        plan = plan_placement(list(self.specs.values()), self.nodes, self.budgets, self.threads)
        self.actors = {cid: _Actor(spec, plan[cid]) for cid, spec in self.specs.items()}
        self._slots = {n.node_id: min(node_slots(n, self.threads), sum(p.node_id == n.node_id for p in plan.values()))
                       for n in self.nodes}
        self._gates = {node: threading.Semaphore(k) for node, k in self._slots.items()}
        self.parallel = min(sum(self._slots.values()), self.limit or len(self.specs))
        self._limit_gate = threading.Semaphore(self.parallel)
        for a in self.actors.values():
            self._spawn(a)
        deadline = time.monotonic() + self.setup_timeout_s
        for a in self.actors.values():
            self._await_ready(a, max(0.0, deadline - time.monotonic()))

    def start(self) -> None:
        self.launch()
        self._calibration = self._calibrate()

    def _respawn(self, a: _Actor) -> None:
        """A fresh actor for a dead one: on its node, or where that node is gone, on the alive
        node with the fewest clients per slot."""
        alive = alive_nodes(self.ray)
        if alive and a.placement.node_id not in {n.node_id for n in alive}:
            busy = {n.node_id: sum(x.placement.node_id == n.node_id for x in self.actors.values()) for n in alive}
            node = min(alive, key=lambda n: (busy[n.node_id] + 1) / node_slots(n, self.threads))
            a.placement = replace(a.placement, node_id=node.node_id)
            self._slots.setdefault(node.node_id, node_slots(node, self.threads))
            self._gates.setdefault(node.node_id, threading.Semaphore(self._slots[node.node_id]))
        self._spawn(a)
        self._await_ready(a, self.setup_timeout_s)

    def _spawn(self, a: _Actor) -> None:
        from ray import cloudpickle
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        p = a.placement
        remote = self._actor_class.options(
            num_cpus=p.num_cpus, memory=p.memory_bytes or None, max_concurrency=2, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(p.node_id, soft=False))
        # the class as bytes: the actor loads it (and its framework's imports) after its own set-up
        a.handle = remote.remote(cloudpickle.dumps(self.client_class), a.spec, a.spec.threads,
                                 self.budgets.get(a.spec.client_id), self.enforce_memory)
        a.setup_error = None

    def _await_ready(self, a: _Actor, timeout_s: float) -> None:
        ref = a.handle.ready.remote()
        if not self.ray.wait([ref], timeout=timeout_s)[0]:
            self._discard(a)
            a.setup_error = (f"not ready within {self.setup_timeout_s:g} s (on Ray node {a.placement.node_id}: "
                             "its CPUs or memory may be held by others)")
            return
        try:
            a.node_id, a.setup_error = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            a.setup_error, a.handle = death_of(self.ray, exc)[1], None

    def _calibrate(self) -> HostCalibration:
        """Measured at the clients' threads in as many set-up actors per node at once as calls
        will compute there (their rates averaged); in this process where none answers."""
        ready = [a for a in self.actors.values() if a.handle is not None and a.setup_error is None]
        chosen = [a for node, k in self._slots.items() for a in [a for a in ready if a.placement.node_id == node][:k]]
        refs = [a.handle.calibrate.remote(self.calibration_s) for a in chosen]
        deadline, results = time.monotonic() + self.setup_timeout_s, []
        for ref in refs:
            with suppress(self.ray.exceptions.RayError):
                left = max(0.0, deadline - time.monotonic())
                results.append(HostCalibration.from_dict(self.ray.get(ref, timeout=left)))
        return merge_calibrations(results) if results else calibrate_host(threads=self.threads,
                                                                           seconds=self.calibration_s)

    def facts(self) -> dict[str, Any]:  # for summary.json
        return {"ray_address": self.address or "local", "ray_version": self.ray.__version__,
                "ray_nodes": len(self.nodes),
                "ray_client_nodes": len({a.node_id or a.placement.node_id for a in self.actors.values()})}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for a in self.actors.values():
            self._discard(a)
        if self._owns_connection:
            with suppress(Exception):
                self.ray.shutdown()

    # -- calls -----------------------------------------------------------------------------
    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        """The call on the client's actor once its node has a free slot; the future's value is
        its result (with `host` and `peak_rss_bytes`) or a Failure."""
        return self._pool.submit(self._run, cid, rnd, method, args, kill)

    def _run(self, cid: int, rnd: int, method: str, args: tuple, kill: bool) -> Outcome:
        a = self.actors[cid]
        with a.lock:
            if a.handle is None:  # it died: a fresh one, the client's state lost
                self._respawn(a)
            if a.setup_error is not None:
                return self._failure(a, rnd, "crashed", f"client setup failed: {a.setup_error}")
            with ExitStack() as held:
                held.enter_context(self._limit_gate)
                held.enter_context(self._gates[a.placement.node_id])
                return self._call(a, rnd, method, args, kill)

    def _call(self, a: _Actor, rnd: int, method: str, args: tuple, kill: bool) -> Outcome:
        ray = self.ray
        a.seq += 1
        t0 = time.perf_counter()
        ref = a.handle.call.remote(a.seq, method, args)
        if kill:
            return self._kill_mid_call(a, rnd, method, ref, t0)
        if not ray.wait([ref], timeout=self.timeout_s)[0]:
            self._discard(a)
            return self._failure(a, rnd, "timeout", f"no answer within {self.timeout_s:g} s: its actor was killed",
                                 t0=t0)
        try:
            reply = ray.get(ref)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(exc, ray.exceptions.RayActorError):
                return self._failure(a, rnd, "error", first_line(exc), t0=t0)  # e.g. a result Ray cannot pickle
            self._discard(a)
            return self._failure(a, rnd, *death_of(ray, exc), t0=t0)
        if reply[0] == "done":
            return reply[1]
        if reply[0] == "raised":
            _, detail, host_s, peak = reply
            return Failure(a.spec.client_id, rnd, "error", detail, host_s=host_s, peak_rss_bytes=peak, host=a.node_id)
        _, host_s, peak = reply  # "oom", measured: the device's app would have been killed, its state lost
        self._discard(a)
        budget = self.budgets.get(a.spec.client_id, 0)
        detail = (f"peak RSS {peak / 2**20:.0f} MB over the {budget / 2**20:.0f} MB budget "
                  "(measured; Ray's memory is a scheduling hint)")
        return Failure(a.spec.client_id, rnd, "oom", detail, host_s=host_s, peak_rss_bytes=peak, host=a.node_id)

    def _kill_mid_call(self, a: _Actor, rnd: int, method: str, ref: Any, t0: float) -> Failure:
        """Fault injection: once the actor has begun the call, ray.kill it; its reply is lost."""
        ray = self.ray
        deadline = time.monotonic() + self.timeout_s
        with suppress(ray.exceptions.RayError):
            while ray.get(a.handle.probe.remote(), timeout=self.timeout_s) < a.seq and time.monotonic() < deadline:
                time.sleep(_PROBE_S)
        ray.kill(a.handle, no_restart=True)
        with suppress(ray.exceptions.RayError):
            ray.wait([ref], timeout=_EXIT_WAIT_S)
        a.handle = None
        return self._failure(a, rnd, "killed", f"fault injection: Ray actor killed (ray.kill) mid-{method}", t0=t0)

    def _failure(self, a: _Actor, rnd: int, cause: str, detail: str, *, t0: float | None = None) -> Failure:
        host_s = time.perf_counter() - t0 if t0 is not None else 0.0
        return Failure(a.spec.client_id, rnd, cause, detail, host_s=host_s, host=a.node_id or a.placement.node_id)

    def _discard(self, a: _Actor) -> None:
        """Kill the actor (it may be dead already); the client's next call makes a fresh one."""
        if a.handle is not None:
            with suppress(Exception):
                self.ray.kill(a.handle, no_restart=True)
        a.handle = None
