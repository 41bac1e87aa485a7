"""KD-FedLLM's public batch: which public examples round r uses, the logits at their positions,
the down payload that carries the teacher's top-k, and distillation toward a sparse target."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.numpy import load as np_load
from safetensors.numpy import save as np_save

from frameworks.divergence import finite_loss
from frameworks.kd.logits import SparseTarget, TopK, deserialize_topk, serialize_topk, sparse_kl
from frameworks.training import batch_order, seeded_draws
from testbed.config.scenario import KDOptions, Scenario
from testbed.ml.modeling import OptimizerSpec
from testbed.ml.task import (
    EncodedExample,
    Encoder,
    _right_pad,
    autocast,
    head_logits,
    last_hidden,
)


def public_batch(scenario: Scenario, public: tuple[int, ...], rnd: int) -> tuple[int, ...]:
    """Round `rnd`'s seeded choice of public examples (dataset indices, sorted)."""
    rng = np.random.default_rng([scenario.seed, rnd, 0x6B64])
    picked = rng.choice(len(public), size=scenario.framework.kd.public_batch, replace=False)
    return tuple(sorted(public[int(i)] for i in picked))


def encode_public(encoder: Encoder, examples: list) -> list[EncodedExample]:
    """Public examples in the task's format. Classification distils at the prompt only (the
    label is never used); generative kinds teacher-force the public reference after the prompt."""
    return encoder.encode_examples(examples)


def prompt_batch(encoder: Encoder, examples: list[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask of what distillation feeds: encoder.kd_sequence of each example."""
    return _right_pad([encoder.kd_sequence(ex) for ex in examples], encoder.pad_id)


def all_positions(encoder: Encoder) -> bool:
    """Whether distillation needs logits at every real token (then picked by kd_rows)."""
    return encoder.kind != "classification"


def kd_rows(encoder: Encoder, examples: list[EncodedExample], positions: str) -> torch.Tensor:
    """Indices of the distilled positions among every real token of prompt_batch, row-major
    (the order OrtStudent.topk returns with all_positions)."""
    rows, start = [], 0
    for ex in examples:
        rows += [start + p for p in encoder.kd_positions(ex, positions)]
        start += len(encoder.kd_sequence(ex))
    return torch.tensor(rows, dtype=torch.long)


def select_positions(hidden: torch.Tensor, mask: torch.Tensor, encoder: Encoder, examples: list[EncodedExample],
                     opts: KDOptions) -> torch.Tensor:
    """(N, C) rows of hidden (B, T, C) at the positions encoder.kd_positions names (a prompt's
    last token, every prompt token, or every position that predicts a reference token), in the
    order OrtStudent.topk returns them."""
    return hidden[mask.bool().to(hidden.device)][kd_rows(encoder, examples, opts.positions).to(hidden.device)]


def position_logits(model, encoder: Encoder, examples: list[EncodedExample], opts: KDOptions) -> torch.Tensor:
    """(N, V) logits of `model` at the distillation positions of `examples`."""
    ids, mask = prompt_batch(encoder, examples)
    return head_logits(model, select_positions(last_hidden(model, ids, mask), mask, encoder, examples, opts))


def pack_down(top: TopK, public_ids: tuple[int, ...]) -> bytes:
    """logits_down: the teacher's top-k and which public examples they are for."""
    arrays = np_load(serialize_topk(top))
    arrays["public_ids"] = np.asarray(public_ids, dtype=np.int32)
    return np_save(arrays)


def unpack_down(data: bytes) -> tuple[TopK, tuple[int, ...]]:
    return deserialize_topk(data), tuple(int(i) for i in np_load(data)["public_ids"])


def distill(model, encoder: Encoder, examples: list[EncodedExample], target: SparseTarget, opts: KDOptions, *,
            steps: int, batch_size: int, optimizer: OptimizerSpec, seed: int, precision: str = "fp32") -> list[float]:
    """`steps` optimizer steps of sparse KL toward `target` on minibatches of `examples`;
    the target's rows follow the examples' positions in order."""
    rows = _target_rows(encoder, examples, opts)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer.build(params)
    order = batch_order(len(examples), steps * batch_size, seed)
    losses = []
    with seeded_draws(seed):  # dropout too
        for step in range(steps):
            picked = order[step * batch_size:(step + 1) * batch_size]
            sel = torch.cat([rows[i] for i in picked])
            sub = SparseTarget(target.indices[sel], target.probs[sel], target.valid[sel])
            with autocast(precision, next(model.parameters()).device.type):
                loss = sparse_kl(position_logits(model, encoder, [examples[i] for i in picked], opts), sub,
                                 opts.temperature)
            losses.append(finite_loss(loss, step=step, what="distillation loss"))  # else TrainingDiverged
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return losses


def _target_rows(encoder: Encoder, examples: list[EncodedExample], opts: KDOptions) -> list[torch.Tensor]:
    """For each example, the target rows that belong to it (one per distilled position)."""
    rows, start = [], 0
    for ex in examples:
        n = len(encoder.kd_positions(ex, opts.positions))
        rows.append(torch.arange(start, start + n))
        start += n
    return rows


def kd_tokens(encoder: Encoder, examples: list[EncodedExample]) -> int:
    """Tokens a pass over `examples` feeds (what distillation and logit work is timed by)."""
    return sum(len(encoder.kd_sequence(ex)) for ex in examples)
