"""Pieces the frameworks share: a LoRA-wrapped model with its encoded examples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from testbed.config.scenario import Scenario
from testbed.ml.memory import release_freed_memory
from testbed.ml.modeling import attach_lora, load_base_model, load_tokenizer
from testbed.ml.task import EncodedExample, TaskEncoder
from testbed.ml.taskdata import TaskData, build_task_data


@dataclass
class LoraTask:
    encoder: TaskEncoder
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
    examples = encoder.encode_many(data.texts(idx), data.labels(idx))
    if model is None:
        model = attach_lora(load_base_model(model_dir), scenario.framework.lora, seed=scenario.seed)
    return LoraTask(encoder, examples, model)


def task_encoder(scenario: Scenario, model_dir: str, data: TaskData) -> TaskEncoder:
    """The scenario's encoder, its token ids cached on disk per tokenizer where the model
    folder has a tokenizer.json (testbed.ml.tokencache)."""
    from pathlib import Path

    from testbed.ml.assets import cache_dir
    from testbed.ml.tokencache import TokenCache

    max_tokens = scenario.dataset.max_tokens
    tokenizer_file = Path(model_dir) / "tokenizer.json"
    cache = TokenCache.for_tokenizer(cache_dir(), tokenizer_file, max_tokens) if tokenizer_file.is_file() else None
    return TaskEncoder(load_tokenizer(model_dir), data.dataset.labels, max_tokens=max_tokens, cache=cache)


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


def mean_metrics(results, keys: tuple[str, ...]) -> dict[str, float]:
    """The mean over `results` (FitRes) of each of `keys` that some client reported."""
    out = {}
    for key in keys:
        values = [r.metrics[key] for r in results if key in r.metrics]
        if values:
            out[key] = sum(values) / len(values)
    return out
