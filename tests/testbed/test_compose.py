"""`testbed compose`: one service per client with its device's limits, and a server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed.backends.compose import host_cores
from testbed.config.fleet import expand_fleet
from testbed.config.scenario import load_scenario
from testbed.ml.assets import cache_dir

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"


def _compose(tmp_path: Path, *sets: str, scenario: Path = SMOKE) -> Path:
    path = tmp_path / "docker-compose.yml"
    cmd = [sys.executable, "-m", "testbed.cli", "compose", str(scenario), "-o", str(path), "--out", str(tmp_path / "run")]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    return path


def _mounts(service: dict) -> dict[str, tuple[Path, str]]:
    """Inside path -> (host folder, as compose resolves the relative source, mode)."""
    out = {}
    for volume in service["volumes"]:
        source, inside, mode = volume.split(":")
        assert source.startswith((".", "..")), volume  # relative to the compose file, never this host's
        out[inside] = (source, mode)
    return out


def _host(tmp_path: Path, source: str) -> Path:
    return Path(os.path.realpath(tmp_path / source))


def test_one_service_per_client_with_the_devices_cpus_and_memory(tmp_path):
    spec = yaml.safe_load(_compose(tmp_path).read_text())
    services = spec["services"]
    assert set(services) == {"client-0", "client-1", "client-2", "server"}
    for client in expand_fleet(load_scenario(SMOKE)):
        svc = services[f"client-{client.client_id}"]
        assert svc["cpus"] == min(client.device.cpu_cores, host_cores())
        assert svc["mem_limit"] == int(client.memory_budget_mb * 2**20)
        assert svc["deploy"]["resources"]["limits"]["memory"] == f"{svc['mem_limit']}b"
        assert svc["network_mode"] == "host" and svc["cap_drop"] == ["ALL"]
        assert svc["environment"]["TESTBED_CLIENT_ID"] == str(client.client_id)
        cache = cache_dir().resolve()  # read-only; the client's own folder under it is its one writable mount
        derived = cache / "runs" / "compose-smoke" / f"client-{client.client_id}"
        mounts = _mounts(svc)
        inside = f"/fedge/cache/runs/compose-smoke/client-{client.client_id}"
        assert (_host(tmp_path, mounts["/fedge/cache"][0]), mounts["/fedge/cache"][1]) == (cache, "ro")
        assert derived.is_dir() and _host(tmp_path, mounts[inside][0]) == derived
        assert [k for k, (_, mode) in mounts.items() if mode != "ro"] == [inside]
        assert svc["environment"]["TESTBED_DERIVED"] == inside
        assert svc["environment"]["TESTBED_CACHE"] == "/fedge/cache"
    server = services["server"]
    assert "emulation.docker.clients=external" in server["command"]
    assert "cpus" not in server and "mem_limit" not in server
    assert server["command"][4:7] == ["/fedge/scenario/smoke.yaml", "--out", "/fedge/run"]
    assert _host(tmp_path, _mounts(server)["/fedge/run"][0]) == tmp_path / "run"
    assert _host(tmp_path, _mounts(server)["/fedge/scenario"][0]) == SMOKE.parent


def test_no_path_of_this_host_is_in_the_file(tmp_path):
    """Every host folder is relative to the file; inside, everything lives under /fedge."""
    spec = yaml.safe_load(_compose(tmp_path).read_text())
    host_paths = (str(tmp_path), str(SMOKE.parents[1]), str(cache_dir().resolve()), sys.prefix,
                  os.path.realpath(sys.base_prefix), os.path.realpath(sys.executable))
    todo, seen = [spec], 0
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            todo += list(node.values())
        elif isinstance(node, list):
            todo += node
        else:
            for token in re.split(r"[:=]", str(node)):  # volume parts, --set values
                seen += 1
                assert not token.startswith(host_paths), node
    assert seen > 100
    for service in spec["services"].values():
        python = service["command"][0]
        assert python.startswith("/fedge/python/bin/python") and service["environment"]["PYTHONHOME"] == "/fedge/python"
        mounts = _mounts(service)
        assert _host(tmp_path, mounts["/fedge/python"][0]) == Path(os.path.realpath(sys.base_prefix))
        assert _host(tmp_path, mounts["/fedge/project"][0]) == SMOKE.parents[1]
        assert Path(os.path.realpath(sys.executable)).name == Path(python).name


def test_the_files_a_scenario_names_are_mounted_and_named_inside(tmp_path):
    """A scenario's data, traces and availability file: each folder mounted read-only, and the
    server told where each file is inside (its host path would lead nowhere there)."""
    from tests.testbed.scenario_folder import scenario_in, write_inputs

    project = tmp_path / "project"
    write_inputs(project)
    spec = yaml.safe_load(_compose(tmp_path, scenario=scenario_in(project)).read_text())
    server = spec["services"]["server"]
    sets = [server["command"][i + 1] for i, arg in enumerate(server["command"]) if arg == "--set"]
    named = dict(s.split("=", 1) for s in sets if not s.startswith("emulation."))
    assert set(named) == {"dataset.path", "availability.path", "fleet.0.link.trace_up", "fleet.0.link.trace_down"}
    for service in spec["services"].values():
        mounts = _mounts(service)
        for field, inside in named.items():
            folder, name = inside.rsplit("/", 1)
            host = _host(tmp_path, mounts[folder][0]) / name
            assert mounts[folder][1] == "ro" and host.is_file(), (field, inside)
    assert named["fleet.0.link.trace_up"].rsplit("/", 1)[1] == "cell.up"
    assert named["dataset.path"].endswith("/news.csv")


def test_a_memory_override_sets_every_clients_mem_limit(tmp_path):
    spec = yaml.safe_load(_compose(tmp_path, "emulation.memory_limit_mb=512").read_text())
    assert {s["mem_limit"] for n, s in spec["services"].items() if n != "server"} == {512 * 2**20}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file(tmp_path):
    path = _compose(tmp_path)
    proc = subprocess.run(["docker-compose", "-f", str(path), "config"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TESTBED_TOKEN": "test-token"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert set(resolved["services"]) == {"client-0", "client-1", "client-2", "server"}
    assert resolved["services"]["client-1"]["environment"]["TESTBED_TOKEN"] == "test-token"
    # compose resolves each relative source against the file's folder: the host folders, from anywhere
    volumes = {v.split(":")[1]: v.split(":")[0] for v in resolved["services"]["server"]["volumes"]
               if isinstance(v, str)} or {v["target"]: v["source"] for v in resolved["services"]["server"]["volumes"]}
    assert Path(volumes["/fedge/run"]) == tmp_path / "run"
    assert Path(os.path.realpath(volumes["/fedge/project"])) == SMOKE.parents[1]
