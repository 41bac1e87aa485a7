"""The scenario's task, as the frameworks use it: the encoder of its kind, and the held-out
evaluation (with generations) of a model, whole or as a data-parallel rank's share.

Frameworks stay task-agnostic: they encode with ``encoder.encode_examples``, train with
testbed.ml.task.training_batch / label_loss, and evaluate with :func:`evaluate_model`, whose
metrics are the rounds table's (classification: eval_loss, accuracy; generative kinds:
eval_loss, perplexity, rouge_l, exact_match) plus, where generations were made, a
``generations`` list (prompt, reference, output, rouge_l, exact_match) that the runner writes
to ``generations.jsonl`` and keeps out of the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from testbed.config.scenario import Scenario
from testbed.ml.generation import generation_subset
from testbed.ml.task import EncodedExample, Encoder, Scores, TaskEncoder

GENERATIONS_KEY = "generations"


def make_encoder(scenario: Scenario, tokenizer, labels: Sequence[str], *, cache=None) -> Encoder:
    """The encoder of the scenario's task kind (`cache`: classification's token cache)."""
    task, ds = scenario.task, scenario.dataset
    if task.kind == "classification":
        return TaskEncoder(tokenizer, labels, max_tokens=ds.max_tokens, cache=cache, prompt=task.prompt_template())
    from testbed.ml.generative import InstructionEncoder, LanguageModelEncoder

    if task.kind == "instruction":
        return InstructionEncoder(tokenizer, max_tokens=ds.max_tokens, template=task.template,
                                  prompt=task.prompt_template(), max_prompt_tokens=ds.max_prompt_tokens,
                                  max_response_tokens=ds.max_response_tokens)
    return LanguageModelEncoder(tokenizer, max_tokens=ds.max_tokens)


def scenario_encoder(scenario: Scenario, model_dir: str, labels: Sequence[str]) -> Encoder:
    """make_encoder with the model folder's tokenizer; classification's token ids cached on
    disk per tokenizer where the folder has a tokenizer.json (testbed.ml.tokencache)."""
    from testbed.ml.assets import cache_dir, derived_dir
    from testbed.ml.modeling import load_tokenizer
    from testbed.ml.tokencache import TokenCache

    cache = None
    tokenizer_file = Path(model_dir) / "tokenizer.json"
    if scenario.task.kind == "classification" and tokenizer_file.is_file():
        cache = TokenCache.for_tokenizer(derived_dir(), tokenizer_file, scenario.dataset.max_tokens,
                                         seed_dir=cache_dir())
    return make_encoder(scenario, load_tokenizer(model_dir), labels, cache=cache)


def generation_positions(scenario: Scenario, n_examples: int) -> tuple[int, ...]:
    """Positions of the held-out set the run generates for (none for classification)."""
    gen = scenario.eval.generate
    if scenario.task.kind == "classification" or gen is None or not gen.samples:
        return ()
    return generation_subset(n_examples, gen.samples, scenario.seed)


def evaluation_metric_names(scenario: Scenario) -> tuple[str, ...]:
    """The keys evaluate_model() gives for the scenario's task (the rounds table's columns)."""
    if not scenario.task.generative:
        return ("eval_loss", "accuracy")
    generated = generation_positions(scenario, scenario.dataset.test_size)
    return ("eval_loss", "perplexity", *(("rouge_l", "exact_match") if generated else ()))


def evaluate_model(model, encoder: Encoder, examples: Sequence[EncodedExample], scenario: Scenario, *,
                   rank: int = 0, world: int = 1) -> dict[str, Any]:
    """The rounds table's metrics of `model` on the held-out `examples` (and its generations).
    With world > 1 this rank scores its contiguous share and generates for the subset's
    positions inside it; the sums and the generated ids are combined across the group
    (testbed.ml.dataparallel), so every rank returns the whole set's result."""
    positions = generation_positions(scenario, len(examples))
    lo, hi = rank * len(examples) // world, (rank + 1) * len(examples) // world
    mine = [p - lo for p in positions if lo <= p < hi]
    gen = scenario.eval.generate
    scores = encoder.score(model, examples[lo:hi], batch_size=scenario.eval.batch_size,
                           precision=scenario.framework.precision, generate=mine,
                           max_new_tokens=gen.max_new_tokens if gen is not None else 0)
    if world > 1:
        scores = _combined(scores, len(positions))
    metrics: dict[str, Any] = encoder.metrics(scores.sums)
    if scores.generations:
        metrics[GENERATIONS_KEY] = [{k: g[k] for k in ("prompt", "reference", "output", "rouge_l", "exact_match")}
                                    for g in scores.generations]
    return metrics


def _combined(scores: Scores, n_generated: int) -> Scores:
    """Sums added across the data-parallel group (every rank holds the same keys, in order);
    generations gathered as UTF-8 bytes in a zero-padded tensor, each rank filling its rows."""
    from testbed.ml import dataparallel

    keys = sorted(scores.sums)
    sums = torch.tensor([scores.sums[k] for k in keys], dtype=torch.float64)
    dataparallel.all_reduce_sum(sums)
    combined = dict(zip(keys, sums.tolist(), strict=True))
    if not n_generated:
        return Scores(combined)
    import json

    rank, world = dataparallel.group()
    width = torch.tensor([max((len(json.dumps(g).encode()) for g in scores.generations), default=0)],
                         dtype=torch.float64)
    counts = torch.zeros(world, dtype=torch.float64)
    counts[rank] = len(scores.generations)
    dataparallel.all_reduce_sum(counts)
    widths = torch.zeros(world, dtype=torch.float64)
    widths[rank] = width[0]
    dataparallel.all_reduce_sum(widths)
    before, longest = int(counts[:rank].sum()), int(widths.max())
    table = torch.zeros((int(counts.sum()), longest), dtype=torch.float64)
    for i, g in enumerate(scores.generations):
        raw = json.dumps(g).encode()
        table[before + i, :len(raw)] = torch.tensor(list(raw), dtype=torch.float64)
    dataparallel.all_reduce_sum(table)
    rows = [json.loads(bytes(int(b) for b in row if b).decode()) for row in table.tolist()]
    return Scores(combined, rows)
