"""The student's logits on ONNX Runtime agree with torch, and adapter updates need no export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frameworks.kd.framework import position_logits, prompt_batch
from frameworks.kd.logits import top_k_of
from frameworks.kd.onnx_student import OrtStudent
from frameworks.kd.student import load_student
from testbed.config.scenario import KDOptions, LoraConfig
from testbed.ml.modeling import attach_lora, load_tokenizer
from testbed.ml.task import TaskEncoder

LABELS = ("business", "sport", "tech")


@pytest.fixture(scope="module")
def student(assets):
    model = attach_lora(load_student(str(assets.tiny), "every:2"), LoraConfig(r=4, alpha=8), seed=0)
    encoder = TaskEncoder(load_tokenizer(str(assets.tiny)), LABELS, max_tokens=24)
    texts = ["Shares rose after the bank's results.", "The striker scored twice in the final.",
             "A new phone chip doubles battery life.", "Parliament voted on the budget today after a long debate."]
    examples = [encoder.encode(t, LABELS[0]) for t in texts]
    return model, encoder, examples


def _perturb(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.mark.parametrize("positions", ["answer", "all"])
def test_ort_matches_torch_and_follows_adapter_updates_without_export(student, positions):
    model, encoder, examples = student
    opts = KDOptions(top_k=8, positions=positions, temperature=2.0)
    ort = OrtStudent(model, k=8, temperature=2.0, all_positions=positions == "all", int8=False, threads=1)
    first = ort.refresh()
    assert first.export_s > 0
    ids, mask = prompt_batch(encoder, examples)
    for seed in (1, 2):  # twice: the second time only the adapters changed
        _perturb(model, seed)
        again = ort.refresh()
        assert again.export_s == 0.0 and again.refresh_s < 0.5
        fast = ort.topk(ids, mask)
        with torch.no_grad():
            ref = top_k_of(position_logits(model, encoder, examples, opts), 8, 2.0)
        n = len(examples) if positions == "answer" else int(mask.sum())
        assert fast.n_positions == ref.n_positions == n
        assert (fast.indices[:, 0] == ref.indices[:, 0]).mean() == 1.0
        np.testing.assert_allclose(fast.logprobs.astype(np.float32), ref.logprobs.astype(np.float32), atol=5e-3)


def test_int8_ort_stays_close_to_torch(student):
    model, encoder, examples = student
    opts = KDOptions(top_k=8)
    ort = OrtStudent(model, k=8, temperature=2.0, all_positions=False, int8=True, threads=1)
    ids, mask = prompt_batch(encoder, examples)
    fast = ort.topk(ids, mask)
    with torch.no_grad():
        ref_logits = position_logits(model, encoder, examples, opts)
    logp = torch.log_softmax(ref_logits / 2.0, dim=-1).gather(1, torch.from_numpy(fast.indices.astype(np.int64)))
    kl = float((logp.exp() * (logp - torch.from_numpy(fast.logprobs.astype(np.float32)))).sum(dim=1).mean())
    assert abs(kl) < 0.05


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_students_export_their_integer_weights_and_agree_exactly(assets, student, scheme):
    from frameworks.training import quantize_blocks

    _, encoder, examples = student
    base = load_student(str(assets.tiny), "every:1")
    quantize_blocks(base, scheme)
    model = attach_lora(base, LoraConfig(r=4, alpha=8), seed=0)
    _perturb(model, 3)
    ort = OrtStudent(model, k=8, temperature=1.0, all_positions=False, int8=False, threads=1)
    ids, mask = prompt_batch(encoder, examples)
    fast = ort.topk(ids, mask)
    with torch.no_grad():
        ref = top_k_of(position_logits(model, encoder, examples, KDOptions(top_k=8, temperature=1.0)), 8, 1.0)
    assert (fast.indices == ref.indices).all()
    np.testing.assert_allclose(fast.logprobs.astype(np.float32), ref.logprobs.astype(np.float32), atol=2e-3)
