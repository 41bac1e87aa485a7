"""`testbed run` with `backend: docker`: the server (round loop, aggregation, evaluation) in
its own container, which starts the client containers beside it.

The host's ``testbed run`` starts one ``server`` container (host network; the host's
Python prefix, the .venv and the project read-only; the run directory and the asset cache
read-write; a GPU reservation where the host shows a GPU) that runs the same ``testbed run``
on the run directory's resolved scenario.yaml. Its one privilege is the Docker socket,
mounted so it can start the client containers as its siblings; clients never get it. The
host streams the server's log and returns its exit status; on Ctrl-C / SIGTERM it stops the
server (which removes its clients), and in every case it then force-removes every container
labelled with the run's id.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

from testbed.backends.docker import (
    LABEL_ROLE,
    LABEL_RUN,
    PROJECT_DIR,
    ROLE_ENV,
    RUN_ID_ENV,
    _scenario_files,
    check_image,
    docker_client,
    gpu_requests,
    host_user,
    host_volumes,
    new_run_id,
    remove_run_containers,
    runtime_paths,
)
from testbed.config.scenario import Scenario

DOCKER_SOCKET = Path("/var/run/docker.sock")
REQUEST_FILE = ".server-request.yaml"
STOP_TIMEOUT_S = 30  # the server's grace to close its clients after SIGTERM


def in_server_container() -> bool:
    return os.environ.get(ROLE_ENV) == "server"


def _socket_path() -> Path:
    host = os.environ.get("DOCKER_HOST", "")
    return Path(host.removeprefix("unix://")) if host.startswith("unix://") else DOCKER_SOCKET


def server_command(scenario_file: Path, out_dir: Path, *, replay_dir: str | None, quiet: bool,
                   resume: bool = False, overwrite: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "testbed.cli", "run", str(scenario_file)]
    cmd += ["--resume", str(out_dir)] if resume else ["--out", str(out_dir)]
    if replay_dir:
        cmd += ["--replay-compute", str(Path(replay_dir).resolve())]
    return cmd + (["--quiet"] if quiet else []) + (["--overwrite"] if overwrite else [])


def run_in_server_container(scenario: Scenario, out_dir: Path, *, replay_dir: str | None = None,
                            quiet: bool = False, resume: bool = False, overwrite: bool = False) -> int:
    """Run the scenario with its server in a container; the server's exit status."""
    from testbed.ml.assets import cache_dir, resolve_model
    from testbed.sim.session import git_commit, write_resolved_scenario

    client = docker_client()
    check_image(client, scenario.emulation.docker.image)
    resolve_model(scenario.model)  # build the assets here: the containers mount the cache
    out_dir = out_dir.resolve()
    # the scenario as asked, for the server's `testbed run` (which claims the folder and writes
    # scenario.yaml itself: a resumed run compares the two)
    write_resolved_scenario(scenario, out_dir, name=REQUEST_FILE)
    cache = cache_dir().resolve()
    run_id = new_run_id(scenario.name)
    socket = _socket_path()
    read_only = runtime_paths() + _scenario_files(scenario) + [Path.cwd()]
    if replay_dir:
        read_only.append(Path(replay_dir).resolve())
    volumes = host_volumes(read_only, [out_dir, cache])
    volumes[str(socket)] = {"bind": str(DOCKER_SOCKET), "mode": "rw"}
    env = {ROLE_ENV: "server", RUN_ID_ENV: run_id, "TESTBED_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "HOME": "/tmp",
           "COLUMNS": os.environ.get("COLUMNS", "120"), "TESTBED_GIT_COMMIT": git_commit()}
    cleanup = lambda: remove_run_containers(client, run_id)  # noqa: E731
    atexit.register(cleanup)
    container = None
    try:
        container = client.containers.run(
            scenario.emulation.docker.image,
            command=server_command(out_dir / REQUEST_FILE, out_dir, replay_dir=replay_dir, quiet=quiet,
                                   resume=resume, overwrite=overwrite),
            detach=True, name=f"fedge-{run_id}-server", labels={LABEL_RUN: run_id, LABEL_ROLE: "server"},
            environment=env, network_mode="host", working_dir=str(Path.cwd()), volumes=volumes,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], device_requests=gpu_requests(),
            **host_user(socket),
        )
        print(f"server container {container.name} (run {run_id}, image {scenario.emulation.docker.image})",
              file=sys.stderr)
        for chunk in container.logs(stream=True, follow=True):
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
        code = int(container.wait().get("StatusCode", 1))
        _note_server_death(out_dir, code)
        return code
    except KeyboardInterrupt:
        if container is not None:
            print("interrupted: stopping the server container", file=sys.stderr)
            try:
                container.stop(timeout=STOP_TIMEOUT_S)
            except Exception:  # already gone
                pass
        return 130
    finally:
        cleanup()
        atexit.unregister(cleanup)


def _note_server_death(out_dir: Path, code: int) -> None:
    """A server container killed outright (no Python left to say so) leaves its summary at
    "running": mark it crashed, with the container's exit code."""
    import json

    path = out_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if summary.get("status") == "running":
        summary.update(status="crashed", server_container_exit_code=code)
        path.write_text(json.dumps(summary, indent=2) + "\n")


__all__ = ["PROJECT_DIR", "in_server_container", "run_in_server_container", "server_command"]
