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

No path in the file is this host's: every folder a service mounts is written relative to the
compose file's folder and mounted at a fixed place under ``/fedge`` (compose_layout.py), so the
file runs from its folder wherever the project, its data and the file sit, as long as they keep
their places relative to one another.

    TESTBED_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))') \\
        docker compose -f FILE up --abort-on-container-exit --exit-code-from server
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from testbed.backends.compose_layout import (
    CACHE,
    PROJECT,
    RUN,
    SCENARIO,
    Layout,
    Mount,
    input_mounts,
    real,
    relative_source,
)
from testbed.backends.docker import LABEL_CLIENT, LABEL_ROLE, PROJECT_DIR, derived_folder, name_stem
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


def compose_spec(scenario: Scenario, scenario_file: str | Path, overrides: list[str] = (), *,
                 out_dir: str | Path | None = None, port: int = DEFAULT_PORT,
                 compose_dir: str | Path = ".") -> dict[str, Any]:
    """The compose file's content as a mapping, its host paths relative to `compose_dir` (the
    folder the file is written to)."""
    from testbed.ml.assets import DERIVED_ENV, cache_dir

    opts = scenario.emulation.docker
    cache = real(cache_dir())
    layout = Layout(compose_dir, PROJECT_DIR, cache)
    run_id = f"compose-{name_stem(scenario.name)}"  # stable: the scenario's, not one run's
    out = real(out_dir or scenario.output)
    scenario_path = real(scenario_file)
    inputs, input_sets = input_mounts(scenario)
    ro = [m.volume(layout.base) for m in (*layout.runtime, *inputs)]
    python = layout.executable()
    env = {"TESTBED_CACHE": str(CACHE), "HF_HUB_OFFLINE": "1", "HOME": "/tmp", **layout.python_env()}
    gflops = _host_gflops(scenario)
    services: dict[str, Any] = {}
    for client in expand_fleet(scenario):
        cid = client.client_id
        cpus = client_cpus(client, scenario, host_gflops=gflops)
        mem = int(client.memory_budget_mb * 2**20) if scenario.emulation.enforce_memory else None
        threads = min(client.device.cpu_cores, scenario.emulation.threads_per_client)
        derived = Mount(derived_folder(run_id, cid), CACHE / "runs" / run_id / f"client-{cid}", "rw")
        service: dict[str, Any] = {
            "image": opts.image,
            "command": [python, "-m", "testbed.backends.http_worker"],
            "network_mode": "host",
            "working_dir": str(PROJECT),
            "environment": {"TESTBED_ENDPOINT": f"http://127.0.0.1:{port}", "TESTBED_TOKEN": TOKEN_REF,
                            "TESTBED_CLIENT_ID": str(cid), "TESTBED_RESPAWN": "1", "TESTBED_CONNECT_RETRY_S": "900",
                            **env, DERIVED_ENV: str(derived.inside), "OMP_NUM_THREADS": str(threads)},
            "volumes": [*ro, Mount(cache, CACHE, "ro").volume(layout.base), derived.volume(layout.base)],
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
    # the user's --set first, then where the scenario's files are inside (they replace the
    # host paths those resolved to), then the docker settings of a compose run
    sets = [*overrides, *input_sets, "emulation.backend=docker", "emulation.docker.server=host",
            "emulation.docker.clients=external", f"emulation.docker.port={port}"]
    command = [python, "-m", "testbed.cli", "run", str(SCENARIO / scenario_path.name), "--out", str(RUN)]
    for assignment in sets:
        command += ["--set", assignment]
    services["server"] = {
        "image": opts.image,
        "command": command,
        "network_mode": "host",
        "working_dir": str(RUN),
        "environment": {"TESTBED_TOKEN": TOKEN_REF, **env, "PYTHONUNBUFFERED": "1"},
        "volumes": [*ro, Mount(scenario_path.parent, SCENARIO, "ro").volume(layout.base),
                    Mount(out, RUN, "rw").volume(layout.base), Mount(cache, CACHE, "rw").volume(layout.base)],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "labels": {LABEL_ROLE: "server"},
    }
    return {"version": "3.8", "services": services}


def write_compose(scenario: Scenario, scenario_file: str | Path, path: str | Path, overrides: list[str] = (), *,
                  out_dir: str | Path | None = None, port: int = DEFAULT_PORT) -> Path:
    from testbed.ml.assets import DERIVED_ENV

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = compose_spec(scenario, scenario_file, overrides, out_dir=out_dir, port=port, compose_dir=path.parent)
    run_id = f"compose-{name_stem(scenario.name)}"
    for service in spec["services"].values():  # the clients' writable folders, made here (as this user)
        if DERIVED_ENV in service["environment"]:
            derived_folder(run_id, int(service["environment"]["TESTBED_CLIENT_ID"])).mkdir(parents=True, exist_ok=True)
    shown = relative_source(real(scenario_file), real(path.parent))
    header = (f"# Generated by `testbed compose`: scenario {shown} ({scenario.name!r}), "
              f"{scenario.n_clients} clients.\n# Run: TESTBED_TOKEN=<random secret> docker compose -f {path.name} up "
              "--abort-on-container-exit --exit-code-from server\n")
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=120))
    return path
