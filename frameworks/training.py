"""What a client's local training is made of, shared by the framework families: a LoRA-wrapped
model with its encoded examples, the seeded batch order, the local training loop (with
FedProx's proximal term), block quantization and the model's size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from frameworks.divergence import finite_loss
from testbed.config.scenario import Scenario
from testbed.ml import dataparallel
from testbed.ml.memory import release_freed_memory
from testbed.ml.modeling import OptimizerSpec, attach_lora, load_base_model
from testbed.ml.task import EncodedExample, Encoder, autocast, label_loss, training_batch
from testbed.ml.taskdata import TaskData, build_task_data
from testbed.ml.tasks import scenario_encoder


@dataclass
class LoraTask:
    encoder: Encoder
    examples: list[EncodedExample]  # the examples `pick` chose, encoded
    model: object  # the base model with fresh LoRA adapters (seeded by the scenario)


def load_lora_task(scenario: Scenario, model_dir: str, pick: Callable[[TaskData], tuple[int, ...]], *,
                   model: object | None = None) -> LoraTask:
    """Tokenizer, task encoder, the picked examples (a client's partition, the test set, ...)
    and the LoRA-wrapped model: the same on the server and in every client (`model`: one
    already loaded, to encode other examples for it)."""
    data = build_task_data(scenario)
    encoder = task_encoder(scenario, model_dir, data)
    idx = pick(data)
    examples = encoder.encode_examples(data.at(idx))
    if model is None:
        model = attach_lora(load_base_model(model_dir), scenario.framework.lora, seed=scenario.seed)
    return LoraTask(encoder, examples, model)


def task_encoder(scenario: Scenario, model_dir: str, data: TaskData) -> Encoder:
    """The encoder of the scenario's task kind (testbed.ml.tasks.scenario_encoder)."""
    return scenario_encoder(scenario, model_dir, data.dataset.labels)


def quantize_blocks(model, scheme: str) -> None:
    """Weight-only quantization of the decoder blocks' linear layers (embeddings and head stay)."""
    if scheme == "none":
        return
    from testbed.ml.quantize import quantize_model

    quantize_model(model.get_decoder().layers, scheme)
    release_freed_memory()


def model_mb(model) -> float:
    """MiB of the model's weights and buffers as this process holds them (quantized blocks
    at their packed size, adapters included)."""
    from testbed.ml.quantize import model_memory_bytes

    return model_memory_bytes(model)["total"] / 2**20


def batch_order(n_examples: int, n_needed: int, seed: int) -> list[int]:
    """Seeded epochs of shuffled example positions, concatenated to `n_needed`."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < n_needed:
        order.extend(rng.permutation(n_examples).tolist())
    return order[:n_needed]


@contextmanager
def seeded_draws(seed: int) -> Iterator[None]:
    """Torch's random draws (LoRA dropout) seeded by the work's own seed, and the process's
    generator left as it was: a client's round is a function of its seed, in a fresh worker
    (a resumed run) as in one that trained before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        yield


def proximal_term(model, global_params: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum ||w - w_global||^2 over the trainable (adapter) parameters."""
    terms = [((p - global_params[n]) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad]
    return torch.stack(terms).sum()


def train_local(model, encoder: Encoder, examples: list[EncodedExample], *, steps: int,
                batch_size: int, optimizer: OptimizerSpec, seed: int, precision: str = "fp32",
                prox_mu: float = 0.0) -> tuple[list[float], int]:
    """Run `steps` optimizer steps; returns per-step losses and tokens processed. A loss that
    is not finite raises frameworks.divergence.TrainingDiverged before its step. Batches and
    dropout are drawn from `seed`."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer.build(params)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad} if prox_mu else {}
    order = batch_order(len(examples), steps * batch_size, seed)
    rank, world = dataparallel.group()  # (0, 1) unless the batch is split across ranks
    losses, tokens = [], 0
    with seeded_draws(seed):
        for step in range(steps):
            batch = training_batch(encoder, [examples[i] for i in order[step * batch_size:(step + 1) * batch_size]])
            tokens += int(batch["attention_mask"].sum())
            share = 1.0
            if world > 1:  # this rank's rows; its loss weighted by its share of the supervised tokens
                full, batch = batch, dataparallel.shard(batch, rank, world)
                share = dataparallel.supervised_tokens(batch) / dataparallel.supervised_tokens(full)
            with autocast(precision):
                loss = label_loss(model, batch) * share
            total = loss + (0.5 * prox_mu / world) * proximal_term(model, anchor) if prox_mu else loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            step_loss = dataparallel.sum_across_ranks(params, loss) if world > 1 else float(loss.detach())
            finite_loss(step_loss, step=step)  # every rank holds the summed loss: all stop at the same step
            opt.step()
            losses.append(step_loss)
    model.eval()
    return losses, tokens
