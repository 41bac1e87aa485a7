"""The Docker backend: every client in its own container, limited like its device.

The endpoint tests need no engine. The others are marked ``docker`` and skip cleanly where no
Docker engine answers or the image is not built (compose/build_base.sh); under .ci/run, which
starts an engine and builds the image (TESTBED_REQUIRE_DOCKER=1), they fail instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from testbed.backends.endpoint import Endpoint
from testbed.backends.http_worker import Link, Replaced
from testbed.backends.messages import Call, Done, Started
from testbed.backends.wire import decode, encode
from testbed.protocol import Payload

SMOKE = Path(__file__).resolve().parents[3] / "scenarios" / "smoke.yaml"
IMAGE = "fedge-testbed:latest"
RUN_LABEL = "fedge-testbed.run"


# --- the endpoint (no engine needed) ------------------------------------------------------------


def _request(url: str, *, token: str | None = None, method: str = "GET", body: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method, headers=headers),
                                    timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_unauthenticated_requests_get_401():
    with Endpoint() as ep:
        ep.register(0, {"spec": "x"})
        base = f"{ep.url}/clients/0"
        assert _request(f"{base}/spec") == 401
        assert _request(f"{base}/spec", token="wrong") == 401
        assert _request(f"{base}/spec", token=ep.token[:-1]) == 401
        assert _request(f"{base}/result", method="POST", body=encode(("ok", 1))) == 401
        assert _request(f"{ep.url}/health") == 401
        assert _request(f"{base}/spec", token=ep.token) == 200
        assert _request(f"{ep.url}/health", token=ep.token) == 200
        assert _request(f"{ep.url}/clients/7/spec", token=ep.token) == 404
        assert ep.receive(0, 0.05) is None  # the refused POST queued nothing


def test_commands_and_results_cross_the_endpoint_and_a_replaced_incarnation_is_refused():
    with Endpoint() as ep:
        ep.register(3, {"threads": 2})
        ep.reset(3, 1)
        link = Link(ep.url, ep.token, 3, "1")
        assert link.spec() == {"threads": 2}
        assert link.next(wait_s=0.1) is None  # long poll, nothing queued: 204
        call = Call(3, "fit", (Payload("adapter_down", b"\x00\xff" * 10),))
        ep.send(3, call)
        assert link.next(wait_s=1) == call
        link.post("result", Started(42))
        assert ep.receive(3, 1) == Started(42)
        ep.reset(3, 2)  # a new container for client 3: the old one is heard no more
        with pytest.raises(Replaced):
            link.post("result", Done(1))
        with pytest.raises(Replaced):
            link.next(wait_s=0.1)
        assert ep.receive(3, 0.05) is None


def test_a_message_body_that_is_not_wire_format_is_a_400():
    with Endpoint() as ep:
        ep.register(0, {})
        assert _request(f"{ep.url}/clients/0/result", token=ep.token, method="POST", body=b"garbage!") == 400
        assert decode(encode({"ok": True})) == {"ok": True}


def test_scenario_options_of_the_docker_backend_are_checked_at_load():
    from testbed.config.scenario import ScenarioError, load_scenario

    scenario = load_scenario(SMOKE, ["emulation.backend=docker", "emulation.time=throttle"])
    assert scenario.emulation.docker.image == IMAGE and scenario.emulation.docker.network == "host"
    with pytest.raises(ScenarioError, match="emulation.docker.network: internal .* not implemented"):
        load_scenario(SMOKE, ["emulation.backend=docker", "emulation.docker.network=internal"])
    with pytest.raises(ScenarioError, match="faults.kill needs client containers the testbed starts"):
        load_scenario(SMOKE, ["emulation.backend=docker", "emulation.docker.clients=external",
                              "faults.kill=[{round: 1, client: 0}]"])
    with pytest.raises(ScenarioError, match="emulation.docker.cpus: unknown key"):
        load_scenario(SMOKE, ["emulation.docker.cpus=2"])


# --- containers ------------------------------------------------------------------------------------


@cache
def _engine_problem() -> str | None:
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        return f"no Docker engine reachable: {exc}"
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        return f"image {IMAGE} not built (compose/build_base.sh)"
    return None


def _client():
    import docker

    return docker.from_env(timeout=60)


def _labelled(run_id: str | None = None, role: str | None = None) -> list:
    labels = [f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL] + ([f"fedge-testbed.role={role}"] if role else [])
    return _client().containers.list(all=True, filters={"label": labels})


def _cli(out: Path, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "testbed.cli", "run", str(SMOKE), "--out", str(out), "--quiet",
           "--set", "emulation.backend=docker"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _run(out: Path, *sets: str, timeout_s: float = 480) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(out, *sets), env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=timeout_s)


@pytest.fixture
def no_leftovers():
    """Skips without an engine or the image; checks that no run's container is left over."""
    problem = _engine_problem()
    if problem is not None and os.environ.get("TESTBED_REQUIRE_DOCKER") == "1":  # CI set up an engine
        pytest.fail(problem)
    if problem is not None:
        pytest.skip(problem)
    assert not _labelled(), "containers of an earlier run are still there"
    yield
    leftovers = _labelled()
    for c in leftovers:
        c.remove(force=True)
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_smoke_runs_end_to_end_with_the_server_and_each_client_in_a_container(assets, tmp_path):
    out = tmp_path / "run"
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert rounds.loc[[1, 2], "accuracy"].notna().all()
    cr = pd.read_csv(out / "client_rounds.csv")
    assert len(cr) == 4 and (cr.outcome == "ok").all()
    summary = json.loads((out / "summary.json").read_text())
    backend = summary["backend"]
    assert backend["kind"] == "docker" and backend["docker"]["server_in_container"] is True
    assert len(summary["git_commit"]) == 40  # handed in by the host: the image has no git
    docker = backend["docker"]
    budgets = {str(c["client"]): int(c["memory_budget_mb"] * 2**20) for c in summary["clients"]}
    for cid, seen in docker["limits_seen"].items():  # read inside each container by its worker
        asked = docker["requested"][cid]
        assert seen["memory_limit_bytes"] == asked["mem_limit_bytes"] == budgets[cid]
        assert seen["cpu_quota_cores"] == pytest.approx(asked["nano_cpus"] / 1e9) == asked["threads"]
        assert seen["cpus"] == [int(c) for c in asked["cpuset_cpus"].split(",")]  # os.sched_getaffinity
        assert seen["torch_threads"] == asked["threads"]
    for cid, starts in docker["startup_s"].items():
        assert starts[0]["run_to_ready_s"] > starts[0]["client_setup_s"] > 0
    assert not _labelled(docker["run_id"])


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_a_client_below_its_memory_need_is_oom_killed_and_the_round_completes(assets, tmp_path):
    out = tmp_path / "run"
    proc = _run(out, "emulation.docker.server=host", "framework.rounds=1", "eval.before_training=false",
                "emulation.memory_limit_mb=150")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cr = pd.read_csv(out / "client_rounds.csv")
    assert len(cr) == 2
    assert set(cr.cause) == {"oom"} and set(cr.outcome) == {"oom"}
    assert (cr.peak_rss_mb >= 140).all()  # the container's cgroup peak: at its 150 MiB limit
    rounds = pd.read_csv(out / "rounds.csv").set_index("round")
    assert rounds.loc[1, "failures"] == 2 and rounds.loc[1, "participants"] == 0
    ev = pd.read_csv(out / "events.csv")
    assert ev[ev.status == "failed"].detail.str.contains("OOMKilled").all()


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_a_killed_client_container_is_a_failure_and_is_replaced_next_round(assets, tmp_path):
    out = tmp_path / "run"
    proc = _run(out, "emulation.docker.server=host", "eval.before_training=false", "framework.clients_per_round=3",
                "faults.kill=[{round: 1, client: 1}]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cr = pd.read_csv(out / "client_rounds.csv").set_index(["round", "client"])
    assert cr.loc[(1, 1), "cause"] == "killed"
    assert cr.loc[(1, 0), "outcome"] == cr.loc[(1, 2), "outcome"] == cr.loc[(2, 1), "outcome"] == "ok"
    summary = json.loads((out / "summary.json").read_text())
    assert [s["incarnation"] for s in summary["backend"]["docker"]["startup_s"]["1"]] == [1, 2]


def _start_and_wait_for_clients(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(_cli(out, "framework.rounds=50"), env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_labelled(role="client")) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "client containers did not start"
        time.sleep(1)
    return proc


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_an_interrupted_run_removes_every_container(assets, tmp_path):
    proc = _start_and_wait_for_clients(tmp_path / "run")
    proc.send_signal(signal.SIGTERM)  # what Ctrl-C or a scheduler does
    assert proc.wait(timeout=120) == 130
    assert not _labelled()


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_a_failing_run_removes_every_container(assets, tmp_path):
    proc = _start_and_wait_for_clients(tmp_path / "run")
    for server in _labelled(role="server"):
        server.kill()  # the server dies without cleaning up: the host must
    assert proc.wait(timeout=120) == 137
    assert not _labelled()


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_a_run_with_its_server_in_a_container_resumes_after_sigterm(assets, tmp_path):
    """The server container holds the run folder; interrupted after round 1's checkpoint, the
    host's `--resume` has a new server container go on from it."""
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_cli(out, "framework.rounds=4"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint" / "state.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    cmd = _cli(out, "framework.rounds=4")
    cmd[cmd.index("--out")] = "--resume"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_after_round"] >= 1
    assert list(pd.read_csv(out / "rounds.csv")["round"]) == [0, 1, 2, 3, 4]
    assert not _labelled()


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_cpu_quotas_update_a_running_container_and_its_worker_sees_them(assets, tmp_path):
    from testbed.backends import make_backend
    from testbed.config.scenario import load_scenario
    from testbed.ml.assets import resolve_model
    from testbed.ml.taskdata import build_task_data
    from testbed.protocol import ClientSpec
    from testbed.sim.frameworks import framework_class

    scenario = load_scenario(SMOKE, ["emulation.backend=docker", "fleet=[{device: pixel-7, link: lte}]",
                                     "framework.clients_per_round=1"])
    spec = ClientSpec(0, scenario, resolve_model(scenario.model), build_task_data(scenario).client_indices[0], 1)
    backend = make_backend("docker", framework_class("fedllm").client_class, [spec], threads=1,
                           memory_limits_bytes={0: 1536 * 2**20}, calibration_s=0.2)
    with backend:
        assert backend.workers[0].ready.limits["memory_limit_bytes"] == 1536 * 2**20
        assert backend.set_cpu_quotas({0: 0.25}) == {0: 0.25}
        seen = backend.workers[0].limits_throttled
        assert seen["cpu_quota_cores"] == pytest.approx(0.25) and seen["cpu_quota_us"] == 25_000
        assert len(_labelled(backend.run_id, role="client")) == 1
    assert not _labelled(backend.run_id)
