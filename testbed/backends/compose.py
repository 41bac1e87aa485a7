"""`testbed compose SCENARIO -o FILE`: the scenario as a compose file, one service per client.

Services ``client-<id>`` (one per client of the expanded fleet) each run the Docker
backend's client worker with the device's limits: ``cpus`` = the device's cores capped by
the host's (under ``time: throttle``, the CPU share that makes this host as slow as the
device, as ``testbed run`` computes it from the host calibration), ``mem_limit`` = the
device's app RAM budget (the same ``memory_budget_mb`` the process and docker backends
enforce). The ``server`` service runs ``testbed run`` on the same scenario with
``emulation.docker.clients: external``: it serves the endpoint on a fixed port and waits for
the clients compose started. The same limits are repeated under ``deploy.resources`` for
``docker stack deploy``. As with the containers ``testbed run`` starts, a client sees the
asset cache read-only and writes only to its own folder, ``<cache>/runs/compose-<scenario>/
client-<id>`` (made when the file is written, kept between compose runs).

    TESTBED_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))') \\
        docker compose -f FILE up --abort-on-container-exit --exit-code-from server
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from testbed.backends.docker import (
    LABEL_CLIENT,
    LABEL_ROLE,
    PROJECT_DIR,
    _scenario_files,
    derived_folder,
    name_stem,
    runtime_paths,
)
from testbed.config.fleet import FleetClient, device_compute, expand_fleet
from testbed.config.scenario import Scenario

DEFAULT_PORT = 8765
TOKEN_REF = "${TESTBED_TOKEN:?set TESTBED_TOKEN to a random secret}"


def host_cores() -> int:
    return len(os.sched_getaffinity(0))


def client_cpus(client: FleetClient, scenario: Scenario, *, host_gflops: float | None = None) -> float:
    """The client's CPU limit (cores): its device's cores capped by the host's; under
    `time: throttle` and given the host's matmul rate, threads / (host-to-device factor)
    where the device is slower than the host (testbed.sim.devicetime.cpu_quotas' rule)."""
    cores = float(min(client.device.cpu_cores, host_cores()))
    if scenario.emulation.time == "throttle" and host_gflops:
        factor = host_gflops / device_compute(client, use_accelerator=scenario.emulation.use_accelerator)
        if factor > 1.0:
            return round(scenario.emulation.threads_per_client / factor, 4)
    return cores


def _host_gflops(scenario: Scenario) -> float | None:
    """The cached (or freshly measured, ~2 s) host calibration's rate, for throttle quotas."""
    if scenario.emulation.time != "throttle":
        return None
    from testbed.host.calibration import load_or_calibrate
    from testbed.ml.assets import cache_dir

    cal = load_or_calibrate(cache_dir() / "calibration-cache.json", threads=scenario.emulation.threads_per_client)
    return cal.gemm_gflops_bf16 if scenario.framework.precision == "bf16" and cal.gemm_gflops_bf16 \
        else cal.gemm_gflops_fp32


def _volumes(paths: list[Path], mode: str) -> list[str]:
    from testbed.backends.docker import host_volumes

    return [f"{src}:{v['bind']}:{mode}" for src, v in host_volumes(paths).items()]


def compose_spec(scenario: Scenario, scenario_file: str | Path, overrides: list[str] = (), *,
                 out_dir: str | Path | None = None, port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The compose file's content as a mapping."""
    from testbed.ml.assets import DERIVED_ENV, cache_dir

    opts = scenario.emulation.docker
    cache = cache_dir().resolve()
    run_id = f"compose-{name_stem(scenario.name)}"  # stable: the scenario's, not one run's
    out = Path(out_dir or scenario.output).resolve()
    ro = _volumes(runtime_paths() + _scenario_files(scenario) + [Path(scenario_file).resolve().parent], "ro")
    python = sys.executable
    gflops = _host_gflops(scenario)
    services: dict[str, Any] = {}
    for client in expand_fleet(scenario):
        cid = client.client_id
        cpus = client_cpus(client, scenario, host_gflops=gflops)
        mem = int(client.memory_budget_mb * 2**20) if scenario.emulation.enforce_memory else None
        threads = min(client.device.cpu_cores, scenario.emulation.threads_per_client)
        derived = derived_folder(run_id, cid)
        service: dict[str, Any] = {
            "image": opts.image,
            "command": [python, "-m", "testbed.backends.http_worker"],
            "network_mode": "host",
            "working_dir": str(PROJECT_DIR),
            "environment": {"TESTBED_ENDPOINT": f"http://127.0.0.1:{port}", "TESTBED_TOKEN": TOKEN_REF,
                            "TESTBED_CLIENT_ID": str(cid), "TESTBED_RESPAWN": "1", "TESTBED_CONNECT_RETRY_S": "900",
                            "TESTBED_CACHE": str(cache), DERIVED_ENV: str(derived), "HF_HUB_OFFLINE": "1",
                            "HOME": "/tmp", "OMP_NUM_THREADS": str(threads)},
            "volumes": [*ro, f"{cache}:{cache}:ro", f"{derived}:{derived}:rw"],
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "labels": {LABEL_ROLE: "client", LABEL_CLIENT: str(cid), "fedge-testbed.device": client.name},
            "cpus": cpus,
            "depends_on": ["server"],
            "deploy": {"resources": {"limits": {"cpus": str(cpus)}}},
        }
        if mem:
            service.update(mem_limit=mem, memswap_limit=mem)
            service["deploy"]["resources"]["limits"]["memory"] = f"{mem}b"
        services[f"client-{cid}"] = service
    sets = [*overrides, "emulation.backend=docker", "emulation.docker.server=host",
            "emulation.docker.clients=external", f"emulation.docker.port={port}"]
    command = [python, "-m", "testbed.cli", "run", str(Path(scenario_file).resolve()), "--out", str(out)]
    for assignment in sets:
        command += ["--set", assignment]
    services["server"] = {
        "image": opts.image,
        "command": command,
        "network_mode": "host",
        "working_dir": str(Path.cwd()),
        "environment": {"TESTBED_TOKEN": TOKEN_REF, "TESTBED_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                        "HOME": "/tmp", "PYTHONUNBUFFERED": "1"},
        "volumes": [*ro, f"{out}:{out}:rw", f"{cache}:{cache}:rw"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "labels": {LABEL_ROLE: "server"},
    }
    return {"version": "3.8", "services": services}


def write_compose(scenario: Scenario, scenario_file: str | Path, path: str | Path, overrides: list[str] = (), *,
                  out_dir: str | Path | None = None, port: int = DEFAULT_PORT) -> Path:
    from testbed.ml.assets import DERIVED_ENV

    spec = compose_spec(scenario, scenario_file, overrides, out_dir=out_dir, port=port)
    for service in spec["services"].values():  # the clients' writable folders, made here (as this user)
        if DERIVED_ENV in service["environment"]:
            Path(service["environment"][DERIVED_ENV]).mkdir(parents=True, exist_ok=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Generated by `testbed compose {scenario_file}`: scenario {scenario.name!r}, "
              f"{scenario.n_clients} clients.\n# Run: TESTBED_TOKEN=<random secret> docker compose -f {path.name} up "
              "--abort-on-container-exit --exit-code-from server\n")
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=120))
    return path
