"""`emulation.backend: ray`: clients in Ray actors on a two-node cluster (one machine), their
failures recorded like the process backend's, and bad Ray settings as one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from testbed.backends.ray_backend import RayBackend  # noqa: E402
from testbed.backends.ray_cluster import RayNode, plan_placement  # noqa: E402
from testbed.config.scenario import load_scenario  # noqa: E402
from testbed.protocol import Client, ClientSpec, Failure, StepRes  # noqa: E402
from testbed.sim.session import run_scenario  # noqa: E402
from tests.golden.compare import assert_tables_equal  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "scenarios" / "smoke.yaml"
FAST = ["eval.before_training=false", "framework.precision=fp32", "framework.rounds=1"]
MB = 2**20


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each on this machine; this process is connected to them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's tips about future defaults
        c = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def _run(tmp_path: Path, name: str, overrides: list[str], replay: Path | None = None) -> tuple[dict, Path]:
    out = tmp_path / name
    scenario = load_scenario(SMOKE, [*FAST, *overrides])
    summary = run_scenario(scenario, out, replay_dir=str(replay) if replay else None, quiet=True)
    return summary, out


def test_clients_spread_over_two_nodes_and_rounds_equal_the_process_backend_replayed(assets, cluster, tmp_path):
    both = ["framework.clients_per_round=3"]
    summary, out = _run(tmp_path, "ray", [*both, "emulation.backend=ray", f"emulation.ray.address={cluster.address}"])
    assert summary["status"] == "completed"
    assert summary["backend"]["kind"] == "ray" and summary["backend"]["ray_nodes"] == 2
    cr = pd.read_csv(out / "client_rounds.csv")
    assert (cr.outcome == "ok").all() and len(cr) == 3
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert cr.host.nunique() == 2 and set(cr.host) <= nodes  # the Ray nodes that computed the rows
    assert (cr.peak_rss_mb > 100).all()  # measured in the actors
    replayed, again = _run(tmp_path, "process", [*both, "emulation.backend=process"], replay=out)
    assert replayed["status"] == "completed"
    assert_tables_equal(pd.read_csv(out / "rounds.csv"), pd.read_csv(again / "rounds.csv"), "rounds")


def test_a_client_killed_mid_round_is_a_recorded_failure_and_the_run_goes_on(assets, cluster, tmp_path):
    summary, out = _run(tmp_path, "kill", ["framework.rounds=2", "framework.clients_per_round=3",
                                           "faults.kill=[{round: 1, client: 0}]", "emulation.backend=ray",
                                           f"emulation.ray.address={cluster.address}"])
    assert summary["status"] == "completed"
    cr = pd.read_csv(out / "client_rounds.csv").set_index(["round", "client"])
    assert cr.loc[(1, 0), "outcome"] == "failed" and cr.loc[(1, 0), "cause"] == "killed"
    assert cr.loc[(2, 0), "outcome"] == "ok"  # a fresh actor took the client's next round
    assert (cr.drop(index=(1, 0)).outcome == "ok").all()
    ev = pd.read_csv(out / "events.csv")
    failed = ev[(ev["round"] == 1) & (ev.client == 0) & (ev.status == "failed")]
    assert "fault injection" in failed.detail.iloc[0]


def test_a_call_over_the_memory_budget_is_an_oom_failure(assets, cluster, tmp_path):
    summary, out = _run(tmp_path, "oom", ["framework.clients_per_round=2", "emulation.backend=ray",
                                          f"emulation.ray.address={cluster.address}", "emulation.memory_limit_mb=60"])
    assert summary["status"] == "completed"
    cr = pd.read_csv(out / "client_rounds.csv")
    assert set(cr.outcome) == {"oom"} and len(cr) == 2
    assert (cr.peak_rss_mb > 60).all()
    ev = pd.read_csv(out / "events.csv")
    assert ev[ev.status == "failed"].detail.str.contains("over the 60 MB budget").all()


# --- the backend's calls, on a toy client ------------------------------------------------------------


class Toy(Client):
    """Calls that sleep, raise or count, without a model."""

    def setup(self) -> None:
        self.calls = 0

    def nap(self, seconds: float) -> StepRes:
        self.calls += 1
        time.sleep(seconds)
        return StepRes()

    def count(self) -> int:
        return self.calls

    def boom(self) -> None:
        raise ValueError("boom in the client")


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module


@pytest.fixture(scope="module")
def toys(cluster):
    scenario = load_scenario(SMOKE)
    specs = [ClientSpec(cid, scenario, "", (), threads=1) for cid in range(3)]
    backend = RayBackend(Toy, specs, memory_limits_bytes={0: 4096 * MB, 1: 4096 * MB, 2: 60 * MB},
                         calibration_s=0.2, timeout_s=60)
    backend.start()
    yield backend
    backend.close()


def _call(backend: RayBackend, cid: int, method: str, *args, kill: bool = False):
    return backend.submit(cid, 1, method, args, kill=kill).result(timeout=120)


def test_calls_on_different_nodes_run_at_once_and_say_where(toys):
    assert toys.calibration.gemm_gflops_fp32 > 0
    t0 = time.perf_counter()
    futures = [toys.submit(cid, 1, "nap", (2.0,)) for cid in (0, 1)]  # 0 and 1 are on different nodes
    results = [f.result(timeout=60) for f in futures]
    assert time.perf_counter() - t0 < 3.5
    assert all(isinstance(r, StepRes) and r.peak_rss_bytes > 0 for r in results)
    assert results[0].host != results[1].host and {r.host for r in results} <= {n["NodeID"] for n in ray.nodes()}


def test_an_exception_in_the_client_is_an_error_failure(toys):
    failure = _call(toys, 0, "boom")
    assert isinstance(failure, Failure) and failure.cause == "error"
    assert failure.detail == "ValueError: boom in the client" and failure.host
    assert isinstance(_call(toys, 0, "nap", 0.0), StepRes)  # the actor lives on


def test_fault_injection_kills_the_actor_mid_call_and_a_fresh_one_takes_the_next(toys):
    _call(toys, 1, "nap", 0.0)
    t0 = time.perf_counter()
    failure = _call(toys, 1, "nap", 30.0, kill=True)
    assert isinstance(failure, Failure) and failure.cause == "killed" and "fault injection" in failure.detail
    assert time.perf_counter() - t0 < 20
    assert _call(toys, 1, "count") == 0  # its state was lost with it


def test_an_actor_killed_from_outside_mid_call_is_a_failure(toys):
    sent = toys.actors[0].seq
    future = toys.submit(0, 1, "nap", (30.0,))
    handle = toys.actors[0].handle
    deadline = time.monotonic() + 20
    while ray.get(handle.probe.remote()) <= sent and time.monotonic() < deadline:  # the call has begun
        time.sleep(0.05)
    ray.kill(handle, no_restart=True)
    failure = future.result(timeout=30)
    assert isinstance(failure, Failure) and failure.cause == "killed" and "ray.kill" in failure.detail
    assert isinstance(_call(toys, 0, "nap", 0.0), StepRes)


def test_a_silent_call_times_out_and_its_actor_is_replaced(toys):
    toys.timeout_s = 1.0
    try:
        failure = _call(toys, 1, "nap", 30.0)
    finally:
        toys.timeout_s = 60
    assert isinstance(failure, Failure) and failure.cause == "timeout"
    assert isinstance(_call(toys, 1, "nap", 0.0), StepRes)


def test_a_measured_peak_over_the_budget_is_oom(toys):
    failure = _call(toys, 2, "nap", 0.0)
    assert isinstance(failure, Failure) and failure.cause == "oom"
    assert "over the 60 MB budget" in failure.detail and failure.peak_rss_bytes > 60 * MB


def test_placement_spreads_clients_by_slots_and_shares_a_full_node():
    scenario = load_scenario(SMOKE)
    specs = [ClientSpec(cid, scenario, "", (), threads=1) for cid in range(5)]
    nodes = [RayNode("a", 2.0, 8e9), RayNode("b", 1.0, 0.5e9)]
    plan = plan_placement(specs, nodes, {cid: 10**9 for cid in range(5)}, threads=1)
    assert [cid for cid, p in sorted(plan.items()) if p.node_id == "a"] == [0, 1, 3, 4]  # a has 2 slots, b 1
    assert {plan[cid].num_cpus for cid in (0, 1, 3, 4)} == {0.5}  # their share of a's 2 CPUs
    assert {plan[cid].memory_bytes for cid in (0, 1, 3, 4)} == {10**9}  # 4 GB fit in 8
    assert plan[2].num_cpus == 1 and plan[2].memory_bytes == 5 * 10**8  # b's memory is less than the budget


# --- bad Ray settings: one line, exit 2 --------------------------------------------------------------


def _testbed_run(tmp_path: Path, prelude: str, sets: list[str]) -> subprocess.CompletedProcess:
    args = ["run", str(SMOKE), "--out", str(tmp_path / "run"), "--quiet", "--set", "emulation.backend=ray",
            "--set", "framework.precision=fp32",
            *[a for s in sets for a in ("--set", s)]]
    code = f"import sys; {prelude}; from testbed.cli.main import main; sys.exit(main({args!r}))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_an_address_that_does_not_answer_is_bad_input(assets, tmp_path):
    t0 = time.perf_counter()
    done = _testbed_run(tmp_path, "pass", ["emulation.ray.address=ray://127.0.0.1:1"])
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: emulation.ray.address: ray://127.0.0.1:1 did not answer (")
    assert "ray start --head" in last and "Traceback" not in done.stderr
    assert time.perf_counter() - t0 < 120


def test_ray_not_installed_is_bad_input(assets, tmp_path):
    done = _testbed_run(tmp_path, "sys.modules['ray'] = None", [])
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {SMOKE}: emulation.backend: ray needs the 'ray' extra (ray is not installed): "
        "pip install 'fedge-testbed[ray]'")
    assert "Traceback" not in done.stderr
