"""A compose file runs from its folder with no host path: `docker compose up` emulated without
Docker. In a private mount namespace (root, `unshare -m`; skipped where there is neither) every
bind source is resolved against the compose file's folder, as compose does, and mounted at its
target (under a tmpfs, `/fedge` -> `<tmpfs>/fedge`); the project and the host's Python are then
hidden, so a path of this host left anywhere in the file fails the run; then the services run
with their commands and environments. The scenario names a data file, traces and an
availability file by paths relative to itself, in a folder of its own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from testbed.backends.docker import PROJECT_DIR
from tests.testbed.scenario_folder import scenario_in, write_inputs

DRIVER = r'''
import os, secrets, subprocess, sys, time
import yaml
path, root, hide = sys.argv[1], sys.argv[2], sys.argv[3:]
base = os.path.dirname(os.path.abspath(path))
spec = yaml.safe_load(open(path))
remap = lambda s: s.replace("/fedge", root + "/fedge")
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", root], check=True)
mounts = {}
for svc in spec["services"].values():
    for volume in svc["volumes"]:
        source, target, mode = volume.split(":")
        assert not os.path.isabs(source), volume
        if target not in mounts or mode == "rw":
            mounts[target] = os.path.normpath(os.path.join(base, source))
for target in sorted(mounts, key=len):
    os.makedirs(remap(target), exist_ok=True)
    subprocess.run(["mount", "--bind", mounts[target], remap(target)], check=True)
for folder in hide:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", folder], check=True)
token = secrets.token_hex(16)
def start(name, svc):
    env = {k: remap(str(v)).replace("${TESTBED_TOKEN:?set TESTBED_TOKEN to a random secret}", token)
           for k, v in svc["environment"].items()}
    log = open(os.path.join(base, name + ".log"), "w")
    return subprocess.Popen([remap(c) for c in svc["command"]], cwd=remap(svc["working_dir"]),
                            env={**env, "PATH": "/usr/bin:/bin"}, stdout=log, stderr=subprocess.STDOUT)
server = start("server", spec["services"]["server"])
clients = [start(n, s) for n, s in spec["services"].items() if n != "server"]
try:
    code = server.wait(timeout=900)
finally:
    for c in clients:
        c.kill()
print("server exit", code)
sys.exit(code)
'''


def _namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not _namespaces(), reason="needs root and unshare -m (a private mount namespace)")
@pytest.mark.usefixtures("assets")
def test_the_compose_file_runs_from_its_folder_with_the_host_paths_hidden(tmp_path: Path) -> None:
    write_inputs(tmp_path / "project")
    scenario = scenario_in(tmp_path / "project")
    compose = tmp_path / "deploy" / "docker-compose.yml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    made = subprocess.run([sys.executable, "-m", "testbed.cli", "compose", str(scenario), "-o", str(compose),
                           "--out", str(tmp_path / "run"), "--port", str(_free_port()),
                           "--set", "framework.precision=fp32"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert made.returncode == 0, made.stderr
    (tmp_path / "run").mkdir()  # docker makes a missing bind source; the emulation does not
    (tmp_path / "mnt").mkdir()
    hide = [str(PROJECT_DIR)] + [p for p in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
                                 if not p.startswith(str(PROJECT_DIR)) and p not in ("/usr", "/")]
    up = subprocess.run(["unshare", "-m", sys.executable, "-c", DRIVER, str(compose), str(tmp_path / "mnt"), *hide],
                        capture_output=True, text=True, timeout=1000, env=env, check=False)
    server_log = (compose.parent / "server.log").read_text() if (compose.parent / "server.log").exists() else ""
    assert up.returncode == 0, up.stderr[-2000:] + server_log[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2] and list(rounds["participants"]) == [0, 2, 2]
