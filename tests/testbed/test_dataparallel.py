"""Data parallelism inside a client: batch shards, the gradient sum, and a real 2-rank group
training exactly what one process trains."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch
from fake_hosts import fake_host

from testbed.backends.slots import sum_calibrations
from testbed.ml import dataparallel
from testbed.ml.task import IGNORE_INDEX

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
STEPS = 3
OVERRIDES = ["framework.batch_size=5", "framework.fedprox_mu=0.5"]  # odd rows: shares of 2 and 3


def _batch(rows: int) -> dict[str, torch.Tensor]:
    ids = torch.arange(rows * 4).reshape(rows, 4)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 2:] = ids[:, 2:]  # two supervised tokens per row
    labels[0, 1] = ids[0, 1]  # row 0: three
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_shards_are_contiguous_rows_that_cover_the_batch():
    batch = _batch(5)
    shards = [dataparallel.shard(batch, r, 2) for r in range(2)]
    assert [s["input_ids"].shape[0] for s in shards] == [2, 3]
    assert torch.equal(torch.cat([s["input_ids"] for s in shards]), batch["input_ids"])
    assert [dataparallel.supervised_tokens(s) for s in shards] == [5, 6]
    assert dataparallel.supervised_tokens(batch) == 11
    with pytest.raises(ValueError, match="2 rows cannot be split across 3"):
        dataparallel.shard(_batch(2), 0, 3)


def test_outside_a_group_a_process_is_rank_0_of_1():
    assert dataparallel.group() == (0, 1)


def test_a_group_calibration_sums_its_ranks():
    from dataclasses import replace

    a = replace(fake_host(threads=1), gemm_gflops_fp32=80.0, mem_bandwidth_gbps=10.0)
    both = sum_calibrations([a, fake_host(threads=1)])  # the fake host: 100 fp32, 200 bf16, 20 GB/s
    assert (both.threads, both.gemm_gflops_fp32, both.gemm_gflops_bf16, both.mem_bandwidth_gbps) == (2, 180.0, 400.0, 30.0)
    assert sum_calibrations([replace(a, gemm_gflops_bf16=None), fake_host()]).gemm_gflops_bf16 is None


def _train(scenario, model_dir: str, indices) -> tuple[list[float], dict[str, torch.Tensor]]:
    from frameworks.training import load_lora_task, train_local
    from testbed.ml.modeling import OptimizerSpec, adapter_state

    torch.set_num_threads(1)
    task = load_lora_task(scenario, model_dir, lambda _data: indices)
    fw = scenario.framework
    losses, _tokens = train_local(task.model, task.encoder, task.examples, steps=STEPS, batch_size=fw.batch_size,
                                  optimizer=OptimizerSpec("sgd", 0.1), seed=7, prox_mu=fw.fedprox_mu)
    return losses, adapter_state(task.model)  # SGD: the update is linear in the summed gradient


def _rank(rank: int, store: str, scenario, model_dir: str, indices, out) -> None:
    from testbed.ml.modeling import serialize

    dataparallel.init(rank, 2, store, timeout_s=120)
    losses, state = _train(scenario, model_dir, indices)
    out.put((rank, (losses, serialize(state))))  # bytes: tensors in a queue die with their process


def test_two_ranks_train_what_one_process_trains(assets, tmp_path):
    from testbed.config.scenario import load_scenario
    from testbed.ml.taskdata import build_task_data

    scenario = load_scenario(SMOKE, OVERRIDES)
    indices = build_task_data(scenario).client_indices[0]
    alone_losses, alone_state = _train(scenario, str(assets.tiny), indices)

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, str(tmp_path / "store"), scenario, str(assets.tiny), indices, out))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    from testbed.ml.modeling import deserialize

    (losses0, state0), (losses1, state1) = ((losses, deserialize(data)) for losses, data in (results[0], results[1]))
    assert losses0 == losses1  # every rank reports the summed loss and holds the same adapter
    assert all(torch.equal(state0[k], state1[k]) for k in state0)
    assert losses0 == pytest.approx(alone_losses, rel=1e-5)  # the batch's math, up to summation order
    moved = max(float((alone_state[k] - 0).abs().max()) for k in alone_state if "lora_B" in k)
    assert moved > 1e-3  # lora_B starts at zero: training moved it
    for k in alone_state:
        assert torch.allclose(state0[k], alone_state[k], rtol=1e-4, atol=1e-6), k


def _rank_eval(rank: int, store: str, scenario, model_dir: str, adapter: bytes, out) -> None:
    from frameworks.fedllm import FedLLMClient
    from testbed.protocol import ClientSpec

    torch.set_num_threads(1)
    dataparallel.init(rank, 2, store, timeout_s=120)
    client = FedLLMClient(ClientSpec(0, scenario, model_dir, (0, 1, 2), threads=1))
    client.setup()
    out.put((rank, client.evaluate_global(adapter)))


def test_two_ranks_evaluate_what_the_server_evaluates(assets, tmp_path):
    from frameworks.fedllm import FedLLM
    from testbed.config.scenario import load_scenario
    from testbed.ml.modeling import serialize
    from testbed.protocol import ServerContext

    scenario = load_scenario(SMOKE, ["dataset.test_size=13"])  # odd: shares of 6 and 7
    server = FedLLM(ServerContext(scenario, str(assets.tiny), tmp_path))
    server.setup()
    g = torch.Generator().manual_seed(1)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=g) if "lora_B" in k else v
             for k, v in server.global_state.items()}  # a trained-looking adapter: lora_B off zero
    server.global_state = state
    expected = server.evaluate(1)

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank_eval, args=(r, str(tmp_path / "store"), scenario, str(assets.tiny),
                                                  serialize(state), out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results[0] == results[1]
    assert results[0]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert results[0]["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-5)
    assert server.client_evaluation(1) == ("evaluate_global", (serialize(state),))
