"""Divergence stops, it is not trained on: a client whose loss or weights are no longer finite
fails its round (cause ``diverged``) and the run goes on; a global model that is no longer
finite after aggregation raises ModelDiverged naming the round and the tensor."""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import frameworks.split.framework as split_framework
import frameworks.training as training
from frameworks.divergence import Diverged, TrainingDiverged, finite_global, finite_loss, nonfinite_tensor
from frameworks.fedllm import FedLLM, FedLLMClient
from frameworks.kd.framework import KDClient, KDFedLLM, position_logits, top_k_of
from frameworks.split.framework import SplitClient, SplitFedLLM
from frameworks.split.model import pack_activations, unpack_activations
from testbed.config.scenario import load_scenario
from testbed.ml.modeling import adapter_state, deserialize, serialize
from testbed.ml.taskdata import build_task_data
from testbed.protocol import (
    ClientCall,
    ClientSpec,
    Failure,
    FitIns,
    FitRes,
    ModelDiverged,
    Payload,
    ServerCall,
    ServerContext,
    StepRes,
)
from testbed.results.recorder import failure_outcome
from testbed.sim.session import run_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
NAN = float("nan")


def _scenario(*overrides: str):
    return load_scenario(SMOKE, ["framework.local_steps=3", "framework.batch_size=4", *overrides])


def _built(scenario, assets, tmp_path, framework_class, client_class):
    server = framework_class(ServerContext(scenario, str(assets.tiny), tmp_path))
    server.setup()
    data = build_task_data(scenario)
    client = client_class(ClientSpec(0, scenario, str(assets.tiny), data.client_indices[0], threads=1))
    client.setup()
    return server, client


def _nan_loss(monkeypatch) -> None:
    """Every training loss of frameworks.training.train_local is NaN (FedLLM's and KD's students)."""
    real = training.label_loss
    monkeypatch.setattr(training, "label_loss", lambda model, batch: real(model, batch) * NAN)


def _poisoned(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    key = sorted(state)[-1]
    bad = {k: v.clone() for k, v in state.items()}
    bad[key].view(-1)[0] = NAN
    return bad, key


# --- the pieces -------------------------------------------------------------------------------


def test_a_loss_that_is_not_finite_raises_at_its_step() -> None:
    assert finite_loss(torch.tensor(0.5), step=0) == 0.5
    for bad in (NAN, math.inf, -math.inf):
        with pytest.raises(TrainingDiverged, match=f"training loss is {bad} at step 4"):
            finite_loss(torch.tensor(bad), step=4)
    assert nonfinite_tensor([("a", torch.ones(3)), ("b", torch.tensor([1.0, math.inf]))]) == "b"
    assert nonfinite_tensor([("ids", torch.tensor([1, 2]))]) is None


def test_model_diverged_names_the_round_and_the_tensor() -> None:
    state, key = _poisoned({"a.lora_A.weight": torch.zeros(2, 2), "b.lora_B.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelDiverged, match=r"^round 7: the global adapter diverged: b\.lora_B\.weight is not finite$"):
        finite_global(state, 7)
    exc = ModelDiverged(7, key, "server part")
    assert isinstance(exc, RuntimeError)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.round, again.tensor, str(again)) == (7, key, str(exc))
    assert failure_outcome("diverged") == "failed"


# --- FedLLM -----------------------------------------------------------------------------------


def test_fedllm_client_with_a_nan_loss_fails_its_round(assets, tmp_path, monkeypatch) -> None:
    server, client = _built(_scenario(), assets, tmp_path, FedLLM, FedLLMClient)
    ins = server.configure_fit(3, [0])[0]
    _nan_loss(monkeypatch)
    out = client.fit(ins)
    assert isinstance(out, Failure)
    assert (out.client_id, out.round, out.cause) == (0, 3, "diverged")
    assert out.detail == "training loss is nan at step 0" and out.host_s > 0
    state = adapter_state(client.model)  # stopped before the optimizer stepped on it
    assert all(torch.equal(state[k], server.global_state[k]) for k in state)


def test_fedllm_client_with_a_huge_learning_rate_fails_its_round(assets, tmp_path) -> None:
    """No injection: Adam's steps of 3e37 overflow the tiny model's activations within a step or two."""
    server, client = _built(_scenario("framework.lr=3e37", "framework.optimizer=adamw"), assets, tmp_path,
                            FedLLM, FedLLMClient)
    out = client.fit(server.configure_fit(1, [0])[0])
    assert isinstance(out, Failure) and out.cause == "diverged", out
    assert out.detail.startswith("training loss is nan at step ")


def test_fedllm_aggregating_a_nan_adapter_raises_model_diverged(assets, tmp_path) -> None:
    server, client = _built(_scenario(), assets, tmp_path, FedLLM, FedLLMClient)
    ins = server.configure_fit(2, [0, 1])[0]
    good = client.fit(ins)
    assert isinstance(good, FitRes)
    bad_state, key = _poisoned(deserialize(good.payload("adapter_up").data))
    bad = FitRes(1, 2, (Payload("adapter_up", serialize(bad_state)),), 8, {"train_loss": 1.0}, ())
    before = server.global_state
    with pytest.raises(ModelDiverged, match=rf"^round 2: the global adapter diverged: {key} is not finite$"):
        server.aggregate_fit(2, [good, bad], [])
    assert server.global_state is before
    with pytest.raises(ModelDiverged, match="round 2"):  # FedBuff's server step too
        server.aggregate_buffered(2, [good, bad], [ins, ins], [0, 0])
    server.aggregate_fit(2, [good], [])  # a finite update still aggregates


# --- KD-FedLLM --------------------------------------------------------------------------------


def test_kd_student_with_a_nan_loss_fails_its_round(assets, tmp_path, monkeypatch) -> None:
    scenario = _scenario("framework.name=kd", "framework.kd.onnx=false", "framework.kd.public_batch=8")
    server, client = _built(scenario, assets, tmp_path, KDFedLLM, KDClient)
    _nan_loss(monkeypatch)
    out = client.fit(server.configure_fit(1, [0])[0])
    assert isinstance(out, Failure) and (out.round, out.cause) == (1, "diverged")
    assert out.detail == "training loss is nan at step 0"


def test_kd_teacher_distilled_toward_nan_logits_raises_model_diverged(assets, tmp_path) -> None:
    scenario = _scenario("framework.name=kd", "framework.kd.onnx=false", "framework.kd.public_batch=8",
                         "framework.kd.server_steps=2")
    server = KDFedLLM(ServerContext(scenario, str(assets.tiny), tmp_path))
    server.setup()
    server.configure_fit(1, [0])
    _, public = server._public(1)
    with torch.no_grad():
        top = top_k_of(position_logits(server.model, server.encoder, public, server.opts), 8, 1.0)
    top.logprobs[:] = NAN
    server.arrived[0] = top
    res = FitRes(0, 1, (), 8, {"train_loss": 1.0}, ())
    with pytest.raises(ModelDiverged, match=r"^round 1: the teacher diverged: its distillation loss \(step 0\)"):
        server.aggregate_fit(1, [res], [])


# --- Split-FedLLM -----------------------------------------------------------------------------


def _split(assets, tmp_path, variant: str = "v2"):
    scenario = _scenario("framework.name=split", f"framework.split.variant={variant}")
    return _built(scenario, assets, tmp_path, SplitFedLLM, SplitClient)


def test_split_step_with_a_nan_loss_ends_the_clients_round(assets, tmp_path) -> None:
    server, client = _split(assets, tmp_path)
    ins = server.configure_fit(4, [0])[0]
    script = server.client_script(4, 0, ins)
    assert next(script).direction == "down"
    assert script.send(None) == ClientCall("begin", (ins,))
    assert client.begin(ins) == StepRes()
    assert script.send(StepRes()) == ClientCall("forward", (0,))
    out = client.forward(0)
    script.send(out)  # its activations go up
    step = script.send(None)
    assert isinstance(step, ServerCall)
    acts = unpack_activations(out.payload("activations_up").data)
    acts.hidden[:] = NAN  # a client whose blocks diverged
    before = adapter_state(server.model)
    answer = step.fn(0, pack_activations(acts))
    assert isinstance(answer, Diverged) and answer.detail == "training loss is nan at step 0"
    after = adapter_state(server.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing stepped
    call = script.send(answer)
    assert call == ClientCall("abandon", (answer.detail,))
    failure = getattr(client, call.method)(*call.args)
    assert isinstance(failure, Failure) and (failure.round, failure.cause) == (4, "diverged")
    assert client.hidden is None


def test_split_client_whose_weights_are_not_finite_fails_at_finish(assets, tmp_path) -> None:
    server, client = _split(assets, tmp_path)
    client.begin(server.configure_fit(1, [0])[0])
    name, param = next((n, p) for n, p in client.model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        param.view(-1)[0] = math.inf
    out = client.finish()
    assert isinstance(out, Failure) and out.cause == "diverged" and name in out.detail


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_split_aggregating_a_nan_client_adapter_raises_model_diverged(assets, tmp_path, variant) -> None:
    server, _ = _split(assets, tmp_path, variant)
    server.configure_fit(5, [0])
    state, key = _poisoned(server.global_client)  # a tensor of the client's blocks
    res = FitRes(0, 0, (Payload("adapter_up", serialize(state)),), 8, {}, ())
    with pytest.raises(ModelDiverged, match=rf"^round 5: the global client adapter diverged: {key} is not finite$"):
        server.aggregate_fit(5, [res], [])


def test_split_server_part_that_is_not_finite_raises_model_diverged(assets, tmp_path) -> None:
    server, _ = _split(assets, tmp_path, "v2")
    server.configure_fit(6, [0])
    with torch.no_grad():
        next(iter(server.server_params.values())).view(-1)[0] = NAN
    res = FitRes(0, 0, (Payload("adapter_up", serialize(server.global_client)),), 8, {}, ())
    with pytest.raises(ModelDiverged, match=r"^round 6: the server part diverged: "):
        server.aggregate_fit(6, [res], [])


# --- a run goes on ----------------------------------------------------------------------------


def test_a_diverged_split_client_is_a_failed_client_round_and_the_run_goes_on(assets, tmp_path, monkeypatch):
    """The first client the server steps for diverges on every batch; the others train."""
    real_step, real_loss = SplitFedLLM.server_step, split_framework.server_label_loss
    victim: list[int] = []
    poisoned = [False]

    def server_step(self, cid, data):
        victim[:] = victim or [cid]
        poisoned[0] = cid == victim[0]
        return real_step(self, cid, data)

    def loss(part, hidden, batch):
        value = real_loss(part, hidden, batch)
        return value * NAN if poisoned[0] else value

    monkeypatch.setattr(SplitFedLLM, "server_step", server_step)
    monkeypatch.setattr(split_framework, "server_label_loss", loss)
    scenario = load_scenario(SMOKE, ["framework.name=split", "emulation.backend=inproc", "framework.rounds=2",
                                     "framework.local_steps=2", "framework.batch_size=4",
                                     "eval.before_training=false"])
    t0 = time.perf_counter()
    summary = run_scenario(scenario, tmp_path / "run", quiet=True)
    assert summary["status"] == "completed", time.perf_counter() - t0
    rows = pd.read_csv(tmp_path / "run" / "client_rounds.csv")
    mine = rows[rows.client == victim[0]]
    assert (mine.outcome == "failed").all() and (mine["cause"] == "diverged").all()
    others = rows[rows.client != victim[0]]
    assert len(others) and (others.outcome == "ok").all()
    rounds = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert list(rounds["round"]) == [1, 2] and rounds.train_loss.map(math.isfinite).all()
