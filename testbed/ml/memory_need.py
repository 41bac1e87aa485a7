"""How much memory a scenario needs at least, from its model's config.json (no weights
loaded): what one client holds, and what the whole fleet needs on this host.

A client holds its frozen weights (fp32 as loaded; the blocks int8 or int4 where the scenario
quantizes them, embeddings and norms staying fp32) and its LoRA training state (fp32 weight,
gradient and two AdamW moments per adapter parameter). Activations, the runtime and
allocator slack come on top, so these are lower bounds: a limit below them cannot hold the
client at all.

The fleet's estimate depends on how compute happens (`fleet_memory`'s `compute`):
`measured` (every run today) runs each client's real work in a worker process, whose runtime
(Python, torch, the task data) is private to it while fp32 weights memory-mapped from the
model file are shared by every worker; a future `predicted` mode, whose clients train
nowhere, needs only the server's model and a record per client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from testbed.config.scenario import LoraConfig, Scenario
from testbed.config.student_layers import student_layers
from testbed.ml.model_facts import ModelFacts

MIB = 2**20
WEIGHT_BYTES = {"none": 4.0, "int8": 1.0, "int4": 0.5}  # per frozen block weight (scales not counted)
TRAINABLE_BYTES = 16.0  # per LoRA parameter: fp32 weight, gradient, AdamW m and v
WORKER_RUNTIME_MB = 100.0  # private to a worker process: a lower bound (a set-up tiny-model worker
# lives under a 300 MiB cgroup limit, scenarios/oom.yaml; its torch pages are shared with the forkserver)
PREDICTED_CLIENT_MB = 0.05  # a client that trains nowhere: its links, schedule and table rows
PROMPT_TOKENS = 7  # "Article: ... \nTopic:" and the label around the max_tokens of text (testbed.ml.task)


@dataclass(frozen=True)
class ClientNeed:
    """What one client holds at least, and how it is made up (for messages)."""

    params: int  # frozen parameters held
    weights_mb: float
    trainable_params: int  # LoRA parameters
    trainable_mb: float
    shared: bool  # fp32 weights mapped from the model file: one copy for every process
    blocks: int  # decoder blocks held

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.trainable_mb

    def describe(self, facts: ModelFacts, precision: str) -> str:
        return (f"{self.params:,} parameters of {facts.config_path} ({self.blocks} of {facts.n_blocks} blocks) as "
                f"{precision} weights, {self.weights_mb:,.1f} MiB, + {self.trainable_params:,} LoRA parameters' "
                f"training state, {self.trainable_mb:,.1f} MiB")


def client_blocks(scenario: Scenario, facts: ModelFacts) -> tuple[int, str, tuple[str, ...]]:
    """(blocks a client holds, how they are stored, its LoRA targets) for the scenario's framework."""
    fw = scenario.framework
    if fw.name == "split":
        return min(fw.split.cut_layer, facts.n_blocks), fw.split.quantization, fw.lora.targets
    if fw.name == "kd":
        kept = len(student_layers(fw.kd.student_layers, facts.n_blocks))
        return kept, fw.kd.student_quantization, fw.kd.student_targets or fw.lora.targets
    return facts.n_blocks, "none", fw.lora.targets


def lora_params(facts: ModelFacts, lora: LoraConfig, targets: tuple[str, ...], blocks: int) -> int:
    """Adapter parameters: r x (in + out) for every targeted linear (per block), r x (vocab +
    hidden) for the embeddings."""
    shapes = facts.linear_shapes()
    total = 0
    for name in {t.rsplit(".", 1)[-1] for t in targets}:
        if name == "embed_tokens":
            total += lora.r * (facts.vocab_size + facts.hidden_size)
        elif name == "lm_head":
            total += lora.r * sum(shapes["lm_head"])
        elif name in shapes:
            total += blocks * lora.r * sum(shapes[name])
    return total


def activation_mb(scenario: Scenario, facts: ModelFacts) -> float:
    """A training step's activations, at least: one fp32 hidden state per token per block the
    client holds, kept for the backward pass (attention, MLP and logits come on top)."""
    blocks, _, _ = client_blocks(scenario, facts)
    tokens = scenario.framework.batch_size * (scenario.dataset.max_tokens + PROMPT_TOKENS)
    return tokens * facts.hidden_size * max(1, blocks) * 4.0 / MIB


def client_need(scenario: Scenario, facts: ModelFacts) -> ClientNeed:
    blocks, quantization, targets = client_blocks(scenario, facts)
    params = facts.embed_params + blocks * facts.block_params + facts.head_params
    weights = (facts.embed_params + facts.head_params) * 4.0 + blocks * facts.block_params * WEIGHT_BYTES[quantization]
    trainable = lora_params(facts, scenario.framework.lora, targets, blocks)
    return ClientNeed(params, weights / MIB, trainable, trainable * TRAINABLE_BYTES / MIB,
                      shared=quantization == "none", blocks=blocks)


@dataclass(frozen=True)
class FleetMemory:
    total_mb: float
    explanation: str  # how the total is made up, for the message


def worker_processes(scenario: Scenario, n_clients: int, host_cores: int) -> int:
    """Worker processes the run keeps alive: one per client (process backend, per_client;
    docker: one container each), a pool's workers, a data-parallel group's ranks, or none
    besides the runner (inproc)."""
    emu = scenario.emulation
    if emu.backend == "inproc":
        return 0
    if emu.backend == "docker" or not (emu.pooled or emu.workers == "data_parallel"):
        return n_clients
    if emu.workers == "data_parallel":
        return emu.threads_per_client
    parallel = emu.parallel_clients if emu.parallel_clients != "auto" else max(1, host_cores // emu.threads_per_client)
    return min(n_clients, parallel)


def fleet_memory(scenario: Scenario, facts: ModelFacts | None, *, compute: str = "measured",
                 host_cores: int | None = None) -> FleetMemory:
    """The least memory the whole fleet needs on this host, by how compute happens. Without
    the model's facts (not built yet, an unknown architecture) only the workers' runtime and
    the clients' records count."""
    n = scenario.n_clients
    server_mb = 0.0 if facts is None else facts.n_params * 4.0 / MIB  # the model, fp32, mapped once
    if compute == "predicted":
        total = server_mb + n * PREDICTED_CLIENT_MB
        return FleetMemory(total, f"{server_mb:,.0f} MiB of model weights + {n:,} clients x "
                                  f"{PREDICTED_CLIENT_MB} MiB of records")
    per_client = PREDICTED_CLIENT_MB
    if facts is not None:
        need = client_need(scenario, facts)
        per_client += need.trainable_mb + (0.0 if need.shared else need.weights_mb)
    cores = host_cores or len(os.sched_getaffinity(0))
    workers = worker_processes(scenario, n, cores)
    total = server_mb + workers * WORKER_RUNTIME_MB + n * per_client
    return FleetMemory(total, f"{server_mb:,.0f} MiB of shared model weights + {workers:,} worker processes x "
                              f"{WORKER_RUNTIME_MB:.0f} MiB of runtime + {n:,} clients x {per_client:,.2f} MiB "
                              "of their own weights, LoRA state and records")


def host_ram_mb() -> float:
    """This host's physical memory, MiB."""
    import psutil

    return psutil.virtual_memory().total / MIB
