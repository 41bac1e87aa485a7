"""One Docker container per client, started with the docker SDK, limited like its device.

Each client's worker (testbed/backends/http_worker.py) runs in its own container with the
device's limits: ``mem_limit`` = its app RAM budget (no swap), ``nano_cpus`` = its thread
count (or, under ``time: throttle``, the CPU quota that makes the host as slow as the
device), ``cpuset_cpus`` = the host cores of the slot it computes on, and torch set to that
many threads. Containers get no capabilities (``cap_drop: ALL``, ``no-new-privileges``) and
see the host's Python prefix, the project's .venv and the project read-only at their host
paths (nothing is installed in the image; torch is never resolved there); the asset cache is
mounted read-only, and each client's own folder of the run read-write (token ids it encodes,
an ONNX export the server did not make), removed with the containers. What a container is
made of, and the engine's checks, are testbed.backends.docker's.

Payloads cross for real: this backend serves an authenticated HTTP endpoint
(testbed/backends/endpoint.py) on 127.0.0.1 (host networking), and each worker long-polls
it for its next call and posts the result back, bodies as safetensors (testbed.backends.wire). The
simulator still times every exchange from the payloads' real sizes. The call itself is
testbed.backends.calls' machine, as in the process backend; this module is its transport.

Failures as in the process backend: ``oom`` when Docker reports the container OOMKilled (or
its cgroup counted an OOM kill), with the container's peak memory; ``killed`` on fault
injection (``container.kill()`` once the call started); ``timeout``; ``crashed``; ``error``.
A dead client gets a fresh container at its next call. Every container carries the label
``fedge-testbed.run=<run id>`` and is removed by that label in ``close()``, at exit and on
signals (``testbed run`` turns SIGTERM into Ctrl-C).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from testbed.backends.calls import Request, WorkerBackend
from testbed.backends.docker import (
    ROLE_ENV,
    RUN_ID_ENV,
    check_image,
    client_container,
    docker_client,
    new_run_id,
    remove_run_containers,
    requested_limits,
    update_container,
    wait_for_exit,
)
from testbed.backends.endpoint import Endpoint
from testbed.backends.messages import AskLimits, Died, Exited, Limits, Ready, Reply, Stop, WorkerSetup
from testbed.backends.slots import CoreSlots, merge_calibrations
from testbed.host.calibration import HostCalibration
from testbed.protocol import Client, ClientSpec, Failure

_STOP_WAIT_S = 10.0


@dataclass
class _Worker:
    spec: ClientSpec
    container: Any = None
    incarnation: int = 0
    run_t: float = 0.0  # monotonic time of containers.run
    setup_error: str | None = None
    ready: Ready | None = None  # the worker's ready message
    died: Died | None = None  # the supervisor's note: return code, cgroup peak memory, OOM kills
    exited: Exited | None = None  # Docker's: exit code, OOMKilled
    timed_out: bool = False
    killed: bool = False
    oom_kills_before: int = 0  # external clients: OOM kills counted before this incarnation
    cpuset: str = ""
    startups: list[dict] = field(default_factory=list)
    limits_throttled: dict | None = None  # read inside after set_cpu_quotas

    def renew(self, external: bool) -> None:
        """Forget the last incarnation's state for the next one (an external client's
        container lives on: its OOM kills so far are not the next worker's)."""
        self.incarnation += 1
        self.setup_error = self.ready = self.exited = None
        self.timed_out = self.killed = False
        if external and self.died is not None:
            self.oom_kills_before = self.oom_kills()
        self.died = None

    def record_ready(self, ready: Ready, first_request_t: float | None) -> None:
        """The worker is ready: keep its message and the start-up's times (container run to
        ready, to its first request, client set-up, the rest)."""
        self.ready = ready
        now = time.monotonic()
        self.startups.append({
            "incarnation": self.incarnation, "run_to_ready_s": round(now - self.run_t, 3),
            "run_to_first_request_s": round(first_request_t - self.run_t, 3) if first_request_t else None,
            "client_setup_s": round(ready.setup_s, 3),
            "overhead_s": round(now - self.run_t - ready.setup_s, 3),
        })

    def peak_bytes(self) -> int:
        """The container's peak memory, as its supervisor read it from its cgroup (0: unknown)."""
        return int((self.died.peak_memory_bytes if self.died is not None else None) or 0)

    def oom_kills(self) -> int:
        """The container's OOM kills so far, as its supervisor counted them."""
        return int((self.died.oom_kills if self.died is not None else None) or 0)

    def cause(self) -> str:
        """Why the worker is gone: oom | killed | timeout | crashed."""
        if (self.exited is not None and self.exited.oom_killed) or self.oom_kills() > self.oom_kills_before:
            return "oom"
        if self.killed:
            return "killed"
        if self.timed_out:
            return "timeout"
        return "crashed"

    def death_detail(self) -> str:
        """How the worker ended: its signal or exit code, OOMKilled, its peak memory."""
        code = self.exited.exit_code if self.exited is not None else None
        if code is None and self.died is not None:
            rc = self.died.returncode
            code = 128 - rc if rc is not None and rc < 0 else rc
        parts = []
        if code is not None and code > 128 and code - 128 in signal.valid_signals():
            parts.append(f"worker killed by {signal.Signals(code - 128).name} (container exit {code})")
        else:
            parts.append(f"worker exited with code {code}")
        if self.exited is not None and self.exited.oom_killed:
            parts.append("OOMKilled")
        peak = self.peak_bytes()
        if peak:
            parts.append(f"container peak memory {peak / 2**20:.0f} MiB")
        if self.timed_out and not self.killed:
            parts.append("silent past the timeout")
        return ", ".join(parts)


class DockerBackend(WorkerBackend[_Worker]):
    def __init__(self, client_class: type[Client], specs: list[ClientSpec], *, threads: int = 1,
                 parallel: int | None = None, memory_limits_bytes: dict[int, int] | None = None,
                 enforce_memory: bool = True, cpu_quotas: bool = False, calibration_s: float = 1.0,
                 timeout_s: float = 1800.0, setup_timeout_s: float | None = None, run_id: str = "run",
                 **_: object) -> None:
        super().__init__(client_class, specs)
        self.options = specs[0].scenario.emulation.docker
        self.threads = threads
        self.memory_limits = dict(memory_limits_bytes or {}) if enforce_memory else {}
        self.slots = CoreSlots(threads, parallel, memory_limits_bytes=list(self.memory_limits.values()))
        self.parallel = self.slots.parallel
        self.calibration_s = calibration_s
        self.timeout_s = timeout_s
        self.setup_timeout_s = setup_timeout_s or self.options.start_timeout_s
        self.run_id = os.environ.get(RUN_ID_ENV) or new_run_id(run_id)
        self.external = self.options.clients == "external"
        self.workers = {cid: _Worker(spec) for cid, spec in self.specs.items()}
        self.quota_cores: dict[int, float] = {}  # set_cpu_quotas: nano_cpus of each client's containers
        self.cgroups_enforced = False  # the facts' name for "limits are enforced": set in start()
        self._calibration: HostCalibration | None = None
        self._docker = None
        self._endpoint: Endpoint | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._endpoint = Endpoint(port=self.options.port, token=os.environ.get("TESTBED_TOKEN") or None)
        if not self.external:
            self._docker = docker_client()
            check_image(self._docker, self.options.image)
            atexit.register(self._remove_containers)
        self._endpoint.start()
        class_path = f"{self.client_class.__module__}:{self.client_class.__qualname__}"
        for cid, w in self.workers.items():
            self._endpoint.register(cid, WorkerSetup(class_path, w.spec, w.spec.threads))
        self.cgroups_enforced = not self.external
        for w in self.workers.values():
            self._spawn(w)
        for w in self.workers.values():
            self._wait_ready(w)
        self._calibration = self._calibrate()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.slots.shutdown()
        if self._endpoint is not None:
            for w in self.workers.values():
                if self._alive(w):
                    self._send(w, Stop())
            deadline = time.monotonic() + _STOP_WAIT_S
            for w in self.workers.values():
                if self._alive(w) and not self.external:
                    self._receive_exit(w, max(0.1, deadline - time.monotonic()))
        self._remove_containers()
        if self._endpoint is not None:
            self._endpoint.close()
        atexit.unregister(self._remove_containers)

    def _remove_containers(self) -> None:
        if self._docker is not None:
            remove_run_containers(self._docker, self.run_id, role="client")  # and the clients' run folders

    def facts(self) -> dict[str, Any]:
        """What summary.json records about the containers: run id, image, start-up times,
        and the limits each worker read back inside its container."""
        return {"docker": {
            "run_id": self.run_id, "image": self.options.image, "network": self.options.network,
            "clients_started_by": "external" if self.external else "testbed",
            "server_in_container": os.environ.get(ROLE_ENV) == "server",
            "endpoint": self._endpoint.url if self._endpoint else None,
            "startup_s": {str(cid): w.startups for cid, w in self.workers.items()},
            "requested": {str(cid): self._requested(w) for cid, w in self.workers.items()},
            "limits_seen": {str(cid): w.ready.limits if w.ready is not None else None
                            for cid, w in self.workers.items()},
            "limits_seen_throttled": {str(cid): w.limits_throttled for cid, w in self.workers.items()
                                      if w.limits_throttled is not None},
        }}

    # -- containers ------------------------------------------------------------------------
    def _requested(self, w: _Worker) -> dict[str, Any]:
        cid = w.spec.client_id
        return requested_limits(w.spec.threads, self.quota_cores.get(cid, w.spec.threads),
                                self.memory_limits.get(cid), w.cpuset)

    def _spawn(self, w: _Worker) -> None:
        """A fresh container for the client (or, for external clients, wait for a new worker)."""
        cid = w.spec.client_id
        w.renew(self.external)
        if self.external:  # the container lives on: its supervisor starts a new worker itself
            w.run_t = time.monotonic()
            return
        self._endpoint.reset(cid, w.incarnation)
        w.run_t = time.monotonic()
        w.cpuset = ",".join(map(str, self.slots.cores[cid % self.parallel]))
        kwargs = client_container(self.options.image, self.run_id, w.spec, w.incarnation,
                                  (self._endpoint.url, self._endpoint.token), self._requested(w))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w.container = self._docker.containers.run(**kwargs)
        threading.Thread(target=self._watch, args=(w.container, cid, w.incarnation), daemon=True,
                         name=f"watch-client{cid}").start()

    def _watch(self, container: Any, cid: int, incarnation: int) -> None:
        """Tell the endpoint when the container exits, with Docker's exit code and OOMKilled."""
        exited = wait_for_exit(container)
        if self._endpoint is not None:
            self._endpoint.post(cid, incarnation, exited)

    def _on_ready(self, w: _Worker, ready: Ready) -> None:
        w.record_ready(ready, self._endpoint.first_request_t(w.spec.client_id))

    def _discard(self, w: _Worker) -> None:
        if w.container is not None:
            try:
                w.container.remove(force=True)
            except Exception:  # already removed
                pass

    def set_cpu_quotas(self, quotas: dict[int, float]) -> dict[int, float]:
        """Throttle clients to `quotas` (cores): their containers' NanoCpus, now and on respawn."""
        if self.external:
            return {}
        applied = {}
        for cid, cores in quotas.items():
            w = self.workers[cid]
            self.quota_cores[cid] = cores
            applied[cid] = cores
            if w.container is not None and self._alive(w):
                self._update(w, {"NanoCpus": int(round(cores * 1e9))})
                w.limits_throttled = self._ask_limits(w)
        return applied

    def _ask_limits(self, w: _Worker) -> dict | None:
        """The limits the worker reads inside its container now."""
        self._send(w, AskLimits())
        reply = self._receive(w, 60.0)
        return reply.values if isinstance(reply, Limits) else None

    def _update(self, w: _Worker, resources: dict[str, Any]) -> None:
        try:
            update_container(self._docker, w.container, resources)
        except Exception as exc:  # the container just died: its next call reports it
            warnings.warn(f"client {w.spec.client_id}: container update {resources} failed: {exc}", stacklevel=2)

    def _pin(self, w: _Worker, cores: list[int]) -> None:
        cpuset = ",".join(map(str, cores))
        if self.external or cpuset == w.cpuset:
            return
        w.cpuset = cpuset
        self._update(w, {"CpusetCpus": cpuset})

    # -- calibration -------------------------------------------------------------------------
    def _calibrate(self) -> HostCalibration:
        """Host speed measured inside the first `parallel` containers at once, in their slots."""
        alive = [w for w in self.workers.values() if self._alive(w)][: self.parallel]
        return self._calibrate_in(alive, max(120.0, 30 * self.calibration_s), threads=self.threads,
                                  combine=merge_calibrations)

    # -- rounds ------------------------------------------------------------------------------
    def _kill_mid_call(self, w: _Worker, request: Request, t0: float) -> Failure:
        """Fault injection: SIGKILL the client's container once its worker started the call."""
        if self.external:
            raise RuntimeError("faults.kill needs containers the testbed started (emulation.docker.clients: start)")
        w.killed = True
        return super()._kill_mid_call(w, request, t0)

    def _failure_peak(self, w: _Worker) -> int:
        return w.peak_bytes()

    # -- messages ------------------------------------------------------------------------------
    def _send(self, w: _Worker, message: Any) -> None:
        self._endpoint.send(w.spec.client_id, message)

    def _receive(self, w: _Worker, timeout_s: float) -> Reply | None:
        """The worker's next message; None once its container died or it stayed silent for
        timeout_s (then its container is killed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            msg = self._endpoint.receive(w.spec.client_id, left) if left > 0 else None
            if msg is None:
                w.timed_out = True
                self._kill(w)
                self._receive_exit(w, _STOP_WAIT_S)
                return None
            if isinstance(msg, Died):
                w.died = msg
                if not self.external:
                    self._receive_exit(w, _STOP_WAIT_S)
                return None
            if isinstance(msg, Exited):
                w.exited = msg
                return None
            return msg

    def _receive_exit(self, w: _Worker, timeout_s: float) -> None:
        """Wait for Docker's note that the container exited (the supervisor's may come first)."""
        deadline = time.monotonic() + timeout_s
        while w.exited is None and not self.external:
            msg = self._endpoint.receive(w.spec.client_id, max(0.0, deadline - time.monotonic()))
            if msg is None:
                return
            if isinstance(msg, Died):
                w.died = msg
            elif isinstance(msg, Exited):
                w.exited = msg

    def _await_exit(self, w: _Worker) -> None:
        self._receive_exit(w, _STOP_WAIT_S)

    def _alive(self, w: _Worker) -> bool:
        if self.external:
            return w.ready is not None and w.died is None and w.setup_error is None
        return w.container is not None and w.exited is None and w.setup_error is None and w.died is None

    def _kill(self, w: _Worker) -> None:
        if w.container is not None and not self.external:
            try:
                w.container.kill()
            except Exception:  # not running any more
                pass

    def _cause(self, w: _Worker, mark: int) -> str:
        return w.cause()

    def _death_detail(self, w: _Worker) -> str:
        return w.death_detail()
