"""Mixed precision on this host: whether bf16 autocast is used, and what it is worth.

`framework.precision: auto` becomes bf16 where the CPU has native bf16 arithmetic (AVX512-BF16
or AMX) and a real training step of the run's model is measured at least MIN_SPEEDUP faster
in it: SmolLM2-135M trains ~1.5x and evaluates ~1.6x faster at the same accuracy here
(docs/timing.md), while a tiny test model at batch 4 x 40 tokens is slower (casts dominate).
Elsewhere bf16 is emulated and slower, so auto is fp32.

Device time must not depend on how the host computed: a device runs the same work whatever
the host's precision. A step under autocast is not all-bf16 GEMM (casts, norms, softmax,
LoRA's small matmuls stay fp32), so the host's bf16 GEMM rate overstates its speed-up
(2.1x here against 1.48x for the real step). `step_speedup` times a real training step of
the run's model at both precisions (the scenario's batch shape, LoRA and thread count) and
dilation uses fp32 GEMM rate x that ratio. Measured once per host, model and shape, then
read from the asset cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from testbed.host.cpu import cpu_model, native_bf16

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario

PROMPT_TOKENS = 6  # "Article:" ... "\nTopic:" around the text: the shape of the real batches


MIN_SPEEDUP = 1.1  # auto picks bf16 only when a training step is at least this much faster


def choose(scenario: Scenario, model_dir: str, *, threads: int, cache: Path) -> tuple[str, float | None]:
    """(precision to run, measured bf16 step speed-up or None) for `framework.precision`:
    fp32 measures nothing; bf16 measures what bf16 spans are dilated with; auto measures
    where the CPU has native bf16 and picks bf16 when it is MIN_SPEEDUP faster."""
    setting = scenario.framework.precision
    if setting == "fp32" or (setting == "auto" and not native_bf16()):
        return "fp32", None
    speedup = cached_step_speedup(scenario, model_dir, threads=threads, cache=cache)
    if setting == "bf16" or speedup >= MIN_SPEEDUP:
        return "bf16", speedup
    return "fp32", None


def _timed_step(model, batch: dict[str, torch.Tensor], precision: str) -> float:
    from testbed.ml.task import autocast, label_loss

    t0 = time.perf_counter()
    with autocast(precision):
        loss = label_loss(model, batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def measure_step_speedup(scenario: Scenario, model_dir: str, *, threads: int, repeats: int = 2) -> float:
    """fp32 seconds / bf16-autocast seconds of one LoRA training step of the scenario's model
    on a batch of its shape (random tokens: speed does not depend on which), median of
    `repeats` alternating pairs after one warm-up of each."""
    from testbed.ml.modeling import attach_lora, load_base_model
    from testbed.ml.task import IGNORE_INDEX

    fw = scenario.framework
    model = attach_lora(load_base_model(model_dir), fw.lora, seed=scenario.seed)
    model.train()
    generator = torch.Generator().manual_seed(0)
    width = scenario.dataset.max_tokens + PROMPT_TOKENS + 1
    ids = torch.randint(0, model.config.vocab_size, (fw.batch_size, width), generator=generator)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -1] = ids[:, -1]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _timed_step(model, batch, "fp32")
        _timed_step(model, batch, "bf16")
        ratios = []
        for _ in range(repeats):
            ratios.append(_timed_step(model, batch, "fp32") / _timed_step(model, batch, "bf16"))
    finally:
        torch.set_num_threads(previous)
        del model, batch
        from testbed.ml.memory import release_freed_memory

        release_freed_memory()  # the runner keeps nothing of the probe for the rest of the run
    return statistics.median(ratios)


def _key(scenario: Scenario, threads: int) -> str:

    fw = scenario.framework
    parts = [cpu_model(), torch.__version__, scenario.model, str(fw.batch_size), str(scenario.dataset.max_tokens),
             fw.lora.model_dump_json(), f"threads={threads}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cached_step_speedup(scenario: Scenario, model_dir: str, *, threads: int, cache: Path) -> float:
    """`measure_step_speedup`, measured once per host, model, batch shape, LoRA and threads."""
    path = cache / "precision" / f"{_key(scenario, threads)}.json"
    try:
        return float(json.loads(path.read_text())["bf16_step_speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speedup = measure_step_speedup(scenario, model_dir, threads=threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"bf16_step_speedup": speedup, "model": scenario.model, "threads": threads,
                               "batch_size": scenario.framework.batch_size,
                               "max_tokens": scenario.dataset.max_tokens}, indent=2) + "\n")
    os.replace(tmp, path)
    return speedup
