"""One Docker container per client, started with the docker SDK, limited like its device.

Each client's worker (testbed/backends/http_worker.py) runs in its own container with the
device's limits: ``mem_limit`` = its app RAM budget (no swap), ``nano_cpus`` = its thread
count (or, under ``time: throttle``, the CPU quota that makes the host as slow as the
device), ``cpuset_cpus`` = the host cores of the slot it computes on, and torch set to that
many threads. Containers get no capabilities (``cap_drop: ALL``, ``no-new-privileges``) and
see the host's Python prefix, the project's .venv and the project read-only at their host
paths (nothing is installed in the image; torch is never resolved there); the asset cache is
mounted read-write (KD builds its ONNX students there once).

Payloads cross for real: this backend serves an authenticated HTTP endpoint
(testbed/backends/endpoint.py) on 127.0.0.1 (host networking), and each worker long-polls
it for its next call and posts the result back, bodies as safetensors (testbed.backends.wire). The
simulator still times every exchange from the payloads' real sizes.

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
import re
import secrets
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.backends.base import Backend
from testbed.backends.endpoint import Endpoint
from testbed.backends.slots import CoreSlots, merge_calibrations
from testbed.host.calibration import HostCalibration
from testbed.protocol import Client, ClientSpec, Failure, Outcome

LABEL_RUN = "fedge-testbed.run"  # every container of a run carries its run id here
LABEL_ROLE = "fedge-testbed.role"  # client | server
LABEL_CLIENT = "fedge-testbed.client"
ROLE_ENV = "TESTBED_DOCKER_ROLE"  # "server" inside the server container
RUN_ID_ENV = "TESTBED_DOCKER_RUN_ID"  # the run id the server container was given
PROJECT_DIR = Path(__file__).resolve().parents[2]
_STOP_WAIT_S = 10.0


class DockerUnavailable(RuntimeError):
    """No Docker engine answers, the SDK is missing, or the image is not built."""


# --- the engine -----------------------------------------------------------------------------


def docker_client(timeout_s: float = 120.0):
    """A docker SDK client that has answered a ping; DockerUnavailable otherwise."""
    try:
        import docker
    except ImportError as exc:
        raise DockerUnavailable("the docker SDK is not installed (pip install docker==7.2.0)") from exc
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests' errors, FileNotFoundError
        raise DockerUnavailable(f"no Docker engine reachable ({exc}); start dockerd, or see docs/docker.md") from None
    return client


def check_image(client, image: str) -> None:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise DockerUnavailable(f"image {image} not found: build it with compose/build_base.sh "
                                "(no registry needed), or set emulation.docker.image") from None


def new_run_id(name: str) -> str:
    """A label-safe run id: the scenario name plus a random suffix."""
    stem = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-.")[:40] or "run"
    return f"{stem}-{secrets.token_hex(4)}"


def remove_run_containers(client, run_id: str, *, role: str | None = None) -> int:
    """Force-remove every container labelled with `run_id` (and `role`); how many there were."""
    labels = [f"{LABEL_RUN}={run_id}"] + ([f"{LABEL_ROLE}={role}"] if role else [])
    removed = 0
    for container in client.containers.list(all=True, filters={"label": labels}):
        try:
            container.remove(force=True)
            removed += 1
        except Exception as exc:  # already gone (removal in progress elsewhere) is fine
            if "No such container" not in str(exc) and "already in progress" not in str(exc):
                warnings.warn(f"could not remove container {container.name}: {exc}", stacklevel=2)
    return removed


def host_volumes(read_only: list[Path], read_write: list[Path] = ()) -> dict[str, dict[str, str]]:
    """Bind mounts at the same paths inside; a path already under a mounted one of the same
    mode is left out."""
    volumes: dict[str, dict[str, str]] = {}
    for mode, paths in (("ro", read_only), ("rw", read_write)):
        chosen: list[Path] = []
        for p in sorted({Path(os.path.realpath(p)) for p in paths if Path(p).exists()}, key=lambda p: len(p.parts)):
            if not any(p == c or c in p.parents for c in chosen):
                chosen.append(p)
        volumes.update({str(p): {"bind": str(p), "mode": mode} for p in chosen})
    return volumes


def runtime_paths() -> list[Path]:
    """What a container needs to run the project: the host's Python prefix, the .venv, the project."""
    return [Path(sys.base_prefix), Path(sys.prefix), PROJECT_DIR]


def host_user(socket: Path | None = None) -> dict[str, Any]:
    """Run as the invoking user, so files written to mounted folders are theirs (root: as is);
    with `socket`, also in the group that may use the Docker socket."""
    if os.getuid() == 0:
        return {}
    user: dict[str, Any] = {"user": f"{os.getuid()}:{os.getgid()}"}
    if socket is not None and socket.exists():
        user["group_add"] = [str(socket.stat().st_gid)]
    return user


def gpu_requests() -> list:
    """A request for every GPU where one is visible on this host (else none)."""
    if not (Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()):
        return []
    import docker

    return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]


def cgroup_peak_bytes(facts: dict | None) -> int:
    return int((facts or {}).get("peak_memory_bytes") or 0)


# --- the backend ----------------------------------------------------------------------------


@dataclass
class _Worker:
    spec: ClientSpec
    container: Any = None
    incarnation: int = 0
    run_t: float = 0.0  # monotonic time of containers.run
    setup_error: str | None = None
    ready: dict | None = None  # the worker's ready message
    died: dict | None = None  # the supervisor's note: return code, cgroup peak memory, OOM kills
    exited: dict | None = None  # Docker's: exit code, OOMKilled
    timed_out: bool = False
    killed: bool = False
    oom_kills_before: int = 0  # external clients: OOM kills counted before this incarnation
    cpuset: str = ""
    startups: list[dict] = field(default_factory=list)
    limits_throttled: dict | None = None  # read inside after set_cpu_quotas


class DockerBackend(Backend):
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
            self._endpoint.register(cid, {"client_class": class_path, "spec": w.spec, "threads": w.spec.threads})
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
            for cid, w in self.workers.items():
                if self._alive(w):
                    self._endpoint.send(cid, ("stop", None))
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
            remove_run_containers(self._docker, self.run_id, role="client")

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
            "limits_seen": {str(cid): (w.ready or {}).get("limits") for cid, w in self.workers.items()},
            "limits_seen_throttled": {str(cid): w.limits_throttled for cid, w in self.workers.items()
                                      if w.limits_throttled is not None},
        }}

    # -- containers ------------------------------------------------------------------------
    def _requested(self, w: _Worker) -> dict[str, Any]:
        cid = w.spec.client_id
        return {"nano_cpus": int(round(self.quota_cores.get(cid, w.spec.threads) * 1e9)),
                "mem_limit_bytes": self.memory_limits.get(cid), "cpuset_cpus": w.cpuset,
                "threads": w.spec.threads}

    def _spawn(self, w: _Worker) -> None:
        """A fresh container for the client (or, for external clients, wait for a new worker)."""
        cid = w.spec.client_id
        w.incarnation += 1
        w.setup_error = w.ready = w.exited = None
        w.timed_out = w.killed = False
        if self.external:  # the container lives on: its supervisor starts a new worker itself
            if w.died is not None:
                w.oom_kills_before = int(w.died.get("oom_kills") or 0)
            w.died = None
            w.run_t = time.monotonic()
            return
        w.died = None
        self._endpoint.reset(cid, w.incarnation)
        w.run_t = time.monotonic()
        w.cpuset = ",".join(map(str, self.slots.cores[cid % self.parallel]))
        req = self._requested(w)
        cache = _cache_dir()
        env = {"TESTBED_ENDPOINT": self._endpoint.url, "TESTBED_TOKEN": self._endpoint.token,
               "TESTBED_CLIENT_ID": str(cid), "TESTBED_INCARNATION": str(w.incarnation),
               "TESTBED_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "OMP_NUM_THREADS": str(w.spec.threads), "HOME": "/tmp"}
        kwargs: dict[str, Any] = dict(
            image=self.options.image, command=[sys.executable, "-m", "testbed.backends.http_worker"],
            detach=True, name=f"fedge-{self.run_id}-client{cid}-{w.incarnation}",
            labels={LABEL_RUN: self.run_id, LABEL_ROLE: "client", LABEL_CLIENT: str(cid)},
            environment=env, network_mode="host", working_dir=str(PROJECT_DIR),
            volumes=host_volumes(runtime_paths() + _scenario_files(w.spec.scenario) + [Path(w.spec.model_dir)],
                                 [cache]),
            nano_cpus=req["nano_cpus"], cpuset_cpus=w.cpuset,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=4096, **host_user(),
        )
        if req["mem_limit_bytes"]:
            kwargs.update(mem_limit=req["mem_limit_bytes"], memswap_limit=req["mem_limit_bytes"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w.container = self._docker.containers.run(**kwargs)
        threading.Thread(target=self._watch, args=(w.container, cid, w.incarnation), daemon=True,
                         name=f"watch-client{cid}").start()

    def _watch(self, container, cid: int, incarnation: int) -> None:
        """Tell the endpoint when the container exits, with Docker's exit code and OOMKilled."""
        try:
            client = docker_client()
            status = client.api.wait(container.id, timeout=None)
            state = client.api.inspect_container(container.id)["State"]
            facts = {"exit_code": status.get("StatusCode"), "oom_killed": bool(state.get("OOMKilled")),
                     "error": state.get("Error") or ""}
        except Exception as exc:  # removed under us (close): it is gone all the same
            facts = {"exit_code": None, "oom_killed": False, "error": f"container gone: {exc}"}
        if self._endpoint is not None:
            self._endpoint.post(cid, incarnation, ("exited", facts))

    def _wait_ready(self, w: _Worker) -> None:
        reply = self._receive(w, self.setup_timeout_s)
        if reply is None:
            w.setup_error = self._death_detail(w)
        elif reply[0] == "setup_error":
            w.setup_error = reply[1]
            self._receive_exit(w, _STOP_WAIT_S)
        elif reply[0] == "ready":
            w.ready = reply[1]
            now = time.monotonic()
            first = self._endpoint.first_request_t(w.spec.client_id)
            w.startups.append({
                "incarnation": w.incarnation, "run_to_ready_s": round(now - w.run_t, 3),
                "run_to_first_request_s": round(first - w.run_t, 3) if first else None,
                "client_setup_s": round(w.ready["setup_s"], 3),
                "overhead_s": round(now - w.run_t - w.ready["setup_s"], 3),
            })
        else:
            w.setup_error = f"unexpected first message {reply[0]!r}"

    def _respawn(self, w: _Worker) -> None:
        if w.container is not None:
            try:
                w.container.remove(force=True)
            except Exception:  # already removed
                pass
        self._spawn(w)
        self._wait_ready(w)

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
        self._endpoint.send(w.spec.client_id, ("limits", None))
        reply = self._receive(w, 60.0)
        return reply[1] if reply is not None and reply[0] == "limits" else None

    def _update(self, w: _Worker, resources: dict[str, Any]) -> None:
        """ContainerUpdate with fields the SDK's update() lacks (NanoCpus)."""
        api = self._docker.api
        try:
            api._result(api._post_json(api._url("/containers/{0}/update", w.container.id), data=resources), True)
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
        results = []
        for w, cores in zip(alive, self.slots.cores, strict=False):
            self._pin(w, cores)
            self._endpoint.send(w.spec.client_id, ("calibrate", self.calibration_s))
        for w in alive:
            reply = self._receive(w, max(120.0, 30 * self.calibration_s))
            if reply is not None and reply[0] == "calibration":
                results.append(HostCalibration.from_dict(reply[1]))
        if not results:
            from testbed.host.calibration import calibrate_host

            return calibrate_host(threads=self.threads, seconds=self.calibration_s)
        return merge_calibrations(results)

    # -- rounds ------------------------------------------------------------------------------
    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        return self.slots.submit(lambda cores: self._call_on(self.workers[cid], rnd, method, args, cores, kill))

    def _call_on(self, w: _Worker, rnd: int, method: str, args: tuple, cores: list[int], kill: bool) -> Outcome:
        cid = w.spec.client_id
        if not self._alive(w):
            self._respawn(w)
        if w.setup_error is not None:
            return Failure(cid, rnd, self._cause(w), f"client setup failed: {w.setup_error}",
                           peak_rss_bytes=cgroup_peak_bytes(w.died))
        self._pin(w, cores)
        t0 = time.perf_counter()
        self._endpoint.send(cid, ("call", (method, args)))
        while True:
            reply = self._receive(w, self.timeout_s)
            if reply is None:
                return Failure(cid, rnd, self._cause(w), self._death_detail(w), host_s=time.perf_counter() - t0,
                               peak_rss_bytes=cgroup_peak_bytes(w.died))
            if reply[0] == "started" and kill:
                return self._kill_mid_call(w, rnd, t0)
            if reply[0] == "started":
                continue
            if reply[0] == "ok":
                return reply[1]
            if reply[0] == "error":
                detail, host_s, peak = reply[1]
                return Failure(cid, rnd, "error", detail, host_s=host_s, peak_rss_bytes=peak)

    def _kill_mid_call(self, w: _Worker, rnd: int, t0: float) -> Failure:
        """Fault injection: SIGKILL the client's container once its worker started the call."""
        if self.external:
            raise RuntimeError("faults.kill needs containers the testbed started (emulation.docker.clients: start)")
        w.killed = True
        try:
            w.container.kill()
        except Exception:  # it died on its own just now
            pass
        self._receive_exit(w, _STOP_WAIT_S)
        detail = f"fault injection: {self._death_detail(w)} mid-fit"
        return Failure(w.spec.client_id, rnd, "killed", detail, host_s=time.perf_counter() - t0)

    # -- messages ------------------------------------------------------------------------------
    def _receive(self, w: _Worker, timeout_s: float):
        """The worker's next message; None once its container died or it stayed silent for
        timeout_s (then its container is killed)."""
        cid = w.spec.client_id
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            msg = self._endpoint.receive(cid, left) if left > 0 else None
            if msg is None:
                w.timed_out = True
                self._kill(w)
                self._receive_exit(w, _STOP_WAIT_S)
                return None
            kind = msg[0]
            if kind == "died":
                w.died = msg[1]
                if self.external:
                    return None
                self._receive_exit(w, _STOP_WAIT_S)
                return None
            if kind == "exited":
                w.exited = msg[1]
                return None
            return msg

    def _receive_exit(self, w: _Worker, timeout_s: float) -> None:
        """Wait for Docker's note that the container exited (the supervisor's may come first)."""
        deadline = time.monotonic() + timeout_s
        while w.exited is None and not self.external:
            msg = self._endpoint.receive(w.spec.client_id, max(0.0, deadline - time.monotonic()))
            if msg is None:
                return
            if msg[0] == "died":
                w.died = msg[1]
            elif msg[0] == "exited":
                w.exited = msg[1]

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

    def _cause(self, w: _Worker) -> str:
        oom_kills = int((w.died or {}).get("oom_kills") or 0)
        if (w.exited or {}).get("oom_killed") or oom_kills > w.oom_kills_before:
            return "oom"
        if w.killed:
            return "killed"
        if w.timed_out:
            return "timeout"
        return "crashed"

    def _death_detail(self, w: _Worker) -> str:
        code = (w.exited or {}).get("exit_code")
        if code is None and w.died is not None:
            rc = w.died.get("returncode")
            code = 128 - rc if rc is not None and rc < 0 else rc
        parts = []
        if code is not None and code > 128 and code - 128 in signal.valid_signals():
            parts.append(f"worker killed by {signal.Signals(code - 128).name} (container exit {code})")
        else:
            parts.append(f"worker exited with code {code}")
        if (w.exited or {}).get("oom_killed"):
            parts.append("OOMKilled")
        peak = cgroup_peak_bytes(w.died)
        if peak:
            parts.append(f"container peak memory {peak / 2**20:.0f} MiB")
        if w.timed_out and not w.killed:
            parts.append("silent past the timeout")
        return ", ".join(parts)


def _cache_dir() -> Path:
    from testbed.ml.assets import cache_dir

    return cache_dir().resolve()


def _scenario_files(scenario) -> list[Path]:
    """Folders of the files a scenario names (own data, traces, availability), to mount."""
    paths = [scenario.dataset.path, scenario.availability.path]
    for entry in scenario.fleet:
        link = entry.link
        if not isinstance(link, str):
            paths += [link.trace_down, link.trace_up]
    return [Path(p).expanduser().resolve().parent for p in paths if p]
