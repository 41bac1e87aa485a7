"""FedLLM pieces: FedAvg arithmetic, seeded batch order, and a real local training step."""

from __future__ import annotations

import pytest
import torch

from frameworks.aggregate import fedavg
from frameworks.fedllm import FedLLM, FedLLMClient
from frameworks.training import batch_order, proximal_term, train_local
from testbed.config.scenario import load_scenario
from testbed.ml.modeling import OptimizerSpec, adapter_state, deserialize, serialize
from testbed.ml.taskdata import build_task_data
from testbed.protocol import ClientSpec, ServerContext

SMOKE_OVERRIDES = ["model=tiny-llama", "framework.local_steps=3", "framework.batch_size=4"]


def test_fedavg_weights_by_samples():
    a = {"w": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.0])}
    b = {"w": torch.tensor([4.0, 6.0]), "b": torch.tensor([3.0])}
    avg = fedavg([a, b], [1.0, 3.0])
    assert torch.allclose(avg["w"], torch.tensor([3.0, 5.0]))
    assert torch.allclose(avg["b"], torch.tensor([2.5]))
    with pytest.raises(ValueError, match="at least one"):
        fedavg([], [])


def test_batch_order_is_seeded_epochs():
    order = batch_order(5, 12, seed=3)
    assert order == batch_order(5, 12, seed=3)
    assert order != batch_order(5, 12, seed=4)
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:10]) == list(range(5))


def _scenario(path):
    return load_scenario(path, SMOKE_OVERRIDES)


@pytest.fixture(scope="module")
def smoke(assets):
    from pathlib import Path

    return _scenario(Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml")


def test_client_round_trip_changes_only_the_adapter(smoke, assets, tmp_path):
    data = build_task_data(smoke)
    server = FedLLM(ServerContext(smoke, str(assets.tiny), tmp_path))
    server.setup()
    client = FedLLMClient(ClientSpec(0, smoke, str(assets.tiny), data.client_indices[0], threads=1))
    client.setup()
    ins = server.configure_fit(1, [0])[0]
    res = client.fit(ins)
    before, after = deserialize(ins.payloads[0].data), deserialize(res.payloads[0].data)
    assert before.keys() == after.keys()
    assert all("lora_" in k for k in after)
    # lora_B starts at zero and must have moved; payload size is the serialised size
    assert any(float((after[k] - before[k]).abs().max()) > 0 for k in after if "lora_B" in k)
    assert res.payloads[0].payload_bytes == len(serialize(after))
    assert res.n_samples == len(data.client_indices[0])
    assert res.spans[0].host_s > 0 and res.spans[0].workload.flops > 0
    # aggregation of one result is that result
    server.aggregate_fit(1, [res], [])
    assert all(torch.equal(server.global_state[k], after[k]) for k in after)


def test_fedprox_term_pulls_towards_the_global_adapter(smoke, assets):
    data = build_task_data(smoke)
    client = FedLLMClient(ClientSpec(0, smoke, str(assets.tiny), data.client_indices[0], threads=1))
    client.setup()
    anchor = {n: p.detach().clone() for n, p in client.model.named_parameters() if p.requires_grad}
    assert float(proximal_term(client.model, anchor)) == 0.0
    start = adapter_state(client.model)

    def drift(mu: float) -> float:
        from testbed.ml.modeling import load_adapter_state

        load_adapter_state(client.model, start)
        train_local(client.model, client.encoder, client.examples, steps=4, batch_size=4,
                    optimizer=OptimizerSpec("sgd", 1.0), seed=1, prox_mu=mu)
        end = adapter_state(client.model)
        return sum(float(((end[k] - start[k]) ** 2).sum()) for k in end)

    assert drift(1.0) < 0.8 * drift(0.0)


def test_a_server_whose_clients_evaluate_starts_from_a_clients_fresh_adapter(smoke, assets, tmp_path):
    data = build_task_data(smoke)
    own = FedLLM(ServerContext(smoke, str(assets.tiny), tmp_path))
    own.setup()
    assert own.client_initial_state() is None  # it built its own state

    lean = FedLLM(ServerContext(smoke, str(assets.tiny), tmp_path, clients_evaluate=True))
    lean.setup()
    assert lean.model is None and lean.global_state is None  # no model loaded for the start state
    assert lean.client_initial_state() == ("initial_adapter", ())
    client = FedLLMClient(ClientSpec(0, smoke, str(assets.tiny), data.client_indices[0], threads=1))
    client.setup()
    lean.adopt_initial_state(client.initial_adapter())
    assert lean.global_state.keys() == own.global_state.keys()
    assert all(torch.equal(lean.global_state[k], own.global_state[k]) for k in own.global_state)  # same seed
    assert lean.model is None and lean.client_initial_state() is None
    assert lean.evaluate(0) == own.evaluate(0)  # the group could not evaluate: the server loads its model then

    client.fit(own.configure_fit(1, [0])[0])
    with pytest.raises(RuntimeError, match="trained already"):
        client.initial_adapter()
    nobody = FedLLM(ServerContext(smoke, str(assets.tiny), tmp_path, clients_evaluate=True))
    nobody.setup()
    nobody.adopt_initial_state(None)  # no client answered: the server builds its own
    assert all(torch.equal(nobody.global_state[k], own.global_state[k]) for k in own.global_state)
