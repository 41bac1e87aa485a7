"""`testbed compose`: one service per client with its device's limits, and a server."""

from __future__ import annotations

import os
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


def _compose(tmp_path: Path, *sets: str) -> Path:
    path = tmp_path / "docker-compose.yml"
    cmd = [sys.executable, "-m", "testbed.cli", "compose", str(SMOKE), "-o", str(path), "--out", str(tmp_path / "run")]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    return path


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
        assert f"{cache}:{cache}:ro" in svc["volumes"] and derived.is_dir()
        assert [v for v in svc["volumes"] if not v.endswith(":ro")] == [f"{derived}:{derived}:rw"]
        assert svc["environment"]["TESTBED_DERIVED"] == str(derived)
    server = services["server"]
    assert "emulation.docker.clients=external" in server["command"]
    assert "cpus" not in server and "mem_limit" not in server


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
