"""Framework scripts on the clock: server calls queue on the server in simulated order."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from testbed.config import registry
from testbed.config.scenario import load_scenario
from testbed.ml.workload import Workload
from testbed.protocol import Client, ClientCall, ComputeSpan, FitIns, FitRes, Framework, Payload, Send, ServerCall
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
SERVER_S = 0.15


class EchoClient(Client):
    def setup(self) -> None:
        pass

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(self.spec.client_id, ins.round, (Payload("update_up", b"u" * 1000),), 1, {"train_loss": 1.0},
                      (ComputeSpan("train", 1e-4, Workload(flops=1e3, bytes_moved=1.0)),))

    def step(self, k: int) -> FitRes:
        return FitRes(self.spec.client_id, 0, (Payload("activations_up", b"a" * 500),), 1, {},
                      (ComputeSpan("step", 1e-4, Workload(flops=1e3, bytes_moved=1.0)),))


class ServerHeavy(Framework):
    """Each client: two steps, each one activation upload and a server call."""

    name = "server-heavy"
    client_class = EchoClient

    def setup(self) -> None:
        self.order: list[int] = []

    def configure_fit(self, rnd, client_ids):
        return {cid: FitIns(rnd, (Payload("model_down", b"m" * 2000),), seed=cid) for cid in client_ids}

    def serve(self, cid: int) -> bytes:
        self.order.append(cid)
        time.sleep(SERVER_S)
        return b"g" * 500

    def client_script(self, rnd, cid, ins):
        yield Send(ins.payloads[0], "down")
        for k in range(2):
            out = yield ClientCall("step", (k,))
            yield Send(out.payloads[0], "up")
            grad = yield ServerCall(self.serve, (cid,), label="backbone")
            yield Send(Payload("gradients_down", grad), "down")
        res = yield ClientCall("fit", (ins,))
        yield Send(res.payloads[0], "up")
        return res

    def prefetch(self, rnd, cid, ins):
        return None

    def aggregate_fit(self, rnd, results, failures):
        return {"train_loss": 1.0}

    def evaluate(self, rnd):
        return {"eval_loss": 0.0, "accuracy": 0.0}


@pytest.fixture()
def server_heavy(monkeypatch):
    monkeypatch.setitem(registry.FRAMEWORKS, "server-heavy", f"{__name__}:ServerHeavy")


def test_server_calls_queue_and_every_step_crosses_the_network(assets, tmp_path, server_heavy):
    scenario = load_scenario(SMOKE, [
        "framework.name=server-heavy", "framework.rounds=1", "framework.clients_per_round=3",
        "emulation.backend=inproc", "eval.before_training=false", "emulation.protocol_overhead=false",
        "fleet=[{device: pixel-7, link: {down_mbps: 100, up_mbps: 100, rtt_ms: 10}, count: 3}]",
    ])
    summary = run_scenario(scenario, tmp_path / "run", quiet=True)
    assert summary["status"] == "completed"
    ev = pd.read_csv(tmp_path / "run" / "events.csv")
    served = ev[ev.kind == "server_compute"].sort_values("sim_start_s")
    assert len(served) == 6 and set(served.detail) == {"backbone"}
    # one at a time: each service starts no earlier than the previous one ended
    starts, ends = served.sim_start_s.to_numpy(), served.sim_end_s.to_numpy()
    assert (starts[1:] >= ends[:-1] - 1e-9).all()
    assert (served.device_s >= SERVER_S * 0.9).all()
    # the three clients arrive together: two of them wait in the queue for the first service
    first_wave = served.head(3)
    assert first_wave.sim_end_s.max() - first_wave.sim_start_s.min() >= 3 * SERVER_S * 0.9
    for kind, n in (("activations_up", 6), ("gradients_down", 6), ("model_down", 3), ("update_up", 3)):
        assert (ev.kind == kind).sum() == n
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv").set_index("round")
    assert rounds.loc[1, "participants"] == 3
