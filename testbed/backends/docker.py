"""The Docker engine, the image, and what a client's container is made of.

The engine answers a ping (:func:`docker_client`) and has the image (:func:`check_image`),
or a :class:`DockerUnavailable` says why not. Every container of a run carries the label
``fedge-testbed.run=<run id>`` (:func:`new_run_id`) and is removed by it
(:func:`remove_run_containers`). A client's container (:func:`client_container`) is
limited like its device (:func:`requested_limits`), sees the host's Python prefix, the
project's .venv, the project and the asset cache read-only at their host paths, and one
folder read-write: its own folder of the run for what it derives from the assets
(:func:`prepare_derived_folder`, under ``<cache>/runs/<run id>/``, made by the host before
the container starts and removed with the run's containers, :func:`remove_run_folders`),
and runs testbed/backends/http_worker.py; :func:`wait_for_exit` reports how it ended. The
backend that starts and talks to these containers is testbed.backends.docker_backend; the
server's own container is testbed.sim.server_container.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.backends.messages import Exited
from testbed.config.extras import MissingExtra, require

if TYPE_CHECKING:
    from testbed.protocol import ClientSpec

LABEL_RUN = "fedge-testbed.run"  # every container of a run carries its run id here
LABEL_ROLE = "fedge-testbed.role"  # client | server
LABEL_CLIENT = "fedge-testbed.client"
ROLE_ENV = "TESTBED_DOCKER_ROLE"  # "server" inside the server container
RUNS_FOLDER = "runs"  # under the asset cache: <run id>/client-<id>/, each client's writable folder
RUN_ID_ENV = "TESTBED_DOCKER_RUN_ID"  # the run id the server container was given
PROJECT_DIR = Path(__file__).resolve().parents[2]


class DockerUnavailable(RuntimeError):
    """No Docker engine answers, the SDK is missing, or the image is not built."""


# --- the engine -----------------------------------------------------------------------------


def docker_client(timeout_s: float = 120.0):
    """A docker SDK client that has answered a ping; DockerUnavailable otherwise."""
    try:
        docker = require("docker")
    except MissingExtra as exc:  # the one line names the extra: pip install 'fedge-testbed[docker]'
        raise DockerUnavailable(str(exc)) from exc
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


def name_stem(name: str) -> str:
    """`name` made label- and path-safe: lower case, [a-z0-9_.-], at most 40 characters."""
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-.")[:40] or "run"


def new_run_id(name: str) -> str:
    """A label-safe run id: the scenario name plus a random suffix."""
    return f"{name_stem(name)}-{secrets.token_hex(4)}"


def remove_run_containers(client, run_id: str, *, role: str | None = None) -> int:
    """Force-remove every container labelled with `run_id` (and `role`); how many there were.
    With the clients gone (`role` None or client), their folders of the run go too."""
    labels = [f"{LABEL_RUN}={run_id}"] + ([f"{LABEL_ROLE}={role}"] if role else [])
    removed = 0
    for container in client.containers.list(all=True, filters={"label": labels}):
        try:
            container.remove(force=True)
            removed += 1
        except Exception as exc:  # already gone (removal in progress elsewhere) is fine
            if "No such container" not in str(exc) and "already in progress" not in str(exc):
                warnings.warn(f"could not remove container {container.name}: {exc}", stacklevel=2)
    if role in (None, "client"):
        remove_run_folders(run_id)
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


# --- a client's container -----------------------------------------------------------------------


def requested_limits(threads: int, cores: float, mem_limit_bytes: int | None, cpuset: str) -> dict[str, Any]:
    """What a client's container is asked for (summary.json's ``requested``): `cores` of CPU
    time (nano_cpus), at most `mem_limit_bytes` of memory, on the host cores of `cpuset`."""
    return {"nano_cpus": int(round(cores * 1e9)), "mem_limit_bytes": mem_limit_bytes, "cpuset_cpus": cpuset,
            "threads": threads}


def derived_folder(run_id: str, client_id: int) -> Path:
    """The client's writable folder of the run, for what its worker derives from the assets."""
    return _cache_dir() / RUNS_FOLDER / run_id / f"client-{client_id}"


def prepare_derived_folder(run_id: str, client_id: int) -> Path:
    """The client's folder of the run, made here before its container starts (so it exists, and
    belongs to the user the containers run as). It starts empty: the worker reads what the
    cache holds already (token ids, the server's ONNX export) from the read-only cache and
    writes only here, so nothing a client writes reaches the cache, the host or another client."""
    folder = derived_folder(run_id, client_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_run_folders(run_id: str) -> None:
    """Every client folder of the run (once its containers are gone)."""
    shutil.rmtree(_cache_dir() / RUNS_FOLDER / run_id, ignore_errors=True)


def client_container(image: str, run_id: str, spec: ClientSpec, incarnation: int, endpoint: tuple[str, str],
                     requested: dict[str, Any]) -> dict[str, Any]:
    """``containers.run`` arguments for the client's worker: the container named after the run,
    the client and its `incarnation`, limited as `requested`; it calls the `endpoint`
    (url, token) back. The asset cache is mounted read-only; the client's folder of the run
    read-write (made now, :func:`prepare_derived_folder`), as ``TESTBED_DERIVED``."""
    from testbed.ml.assets import DERIVED_ENV

    cid = spec.client_id
    cache = _cache_dir()
    derived = prepare_derived_folder(run_id, cid)
    url, token = endpoint
    env = {"TESTBED_ENDPOINT": url, "TESTBED_TOKEN": token,
           "TESTBED_CLIENT_ID": str(cid), "TESTBED_INCARNATION": str(incarnation),
           "TESTBED_CACHE": str(cache), DERIVED_ENV: str(derived), "HF_HUB_OFFLINE": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": str(spec.threads), "HOME": "/tmp"}
    read_only = runtime_paths() + _scenario_files(spec.scenario) + [Path(spec.model_dir), cache]
    kwargs: dict[str, Any] = dict(
        image=image, command=[sys.executable, "-m", "testbed.backends.http_worker"],
        detach=True, name=f"fedge-{run_id}-client{cid}-{incarnation}",
        labels={LABEL_RUN: run_id, LABEL_ROLE: "client", LABEL_CLIENT: str(cid)},
        environment=env, network_mode="host", working_dir=str(PROJECT_DIR),
        volumes=host_volumes(read_only, [derived]),
        nano_cpus=requested["nano_cpus"], cpuset_cpus=requested["cpuset_cpus"],
        cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=4096, **host_user(),
    )
    if requested["mem_limit_bytes"]:
        kwargs.update(mem_limit=requested["mem_limit_bytes"], memswap_limit=requested["mem_limit_bytes"])
    return kwargs


def wait_for_exit(container: Any) -> Exited:
    """Block until the container exits: Docker's exit code, OOMKilled and error."""
    try:
        client = docker_client()
        status = client.api.wait(container.id, timeout=None)
        state = client.api.inspect_container(container.id)["State"]
        return Exited(status.get("StatusCode"), bool(state.get("OOMKilled")), state.get("Error") or "")
    except Exception as exc:  # removed under us (close): it is gone all the same
        return Exited(None, False, f"container gone: {exc}")


def update_container(client: Any, container: Any, resources: dict[str, Any]) -> None:
    """ContainerUpdate with fields the SDK's update() lacks (NanoCpus)."""
    api = client.api
    api._result(api._post_json(api._url("/containers/{0}/update", container.id), data=resources), True)


def _cache_dir() -> Path:
    from testbed.ml.assets import cache_dir

    return cache_dir().resolve()


def _scenario_files(scenario) -> list[Path]:
    """Folders of the files a scenario names (own data, traces, availability) and its model
    folder (a scenario's paths are relative to its own folder, not to the current one), to mount."""
    paths = [scenario.dataset.path, scenario.availability.path]
    for entry in scenario.fleet:
        link = entry.link
        if not isinstance(link, str):
            paths += [link.trace_down, link.trace_up]
    folders = [Path(p).expanduser().resolve().parent for p in paths if p]
    model = Path(scenario.model)
    return folders + ([model.resolve()] if model.is_absolute() and model.is_dir() else [])
