"""Top-k logits on the wire, their sparse aggregation, and the distillation loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from frameworks.kd.logits import (
    SparseTarget,
    aggregate,
    deserialize_topk,
    from_arrays,
    serialize_topk,
    sparse_kl,
    top_k_of,
)


def _data_bytes(payload: bytes) -> int:
    """The tensor bytes of a safetensors payload (total minus the 8-byte length and header)."""
    header_len = int.from_bytes(payload[:8], "little")
    json.loads(payload[8:8 + header_len])
    return len(payload) - 8 - header_len


def test_topk_round_trip_and_byte_count():
    torch.manual_seed(0)
    logits = torch.randn(6, 1000)  # 6 positions, vocab 1000
    top = top_k_of(logits, 8, temperature=2.0)
    assert top.indices.dtype == np.uint16 and top.logprobs.dtype == np.float16
    ref_values, ref_idx = torch.topk(torch.log_softmax(logits / 2.0, dim=-1), 8)
    assert (top.indices.astype(np.int64) == ref_idx.numpy()).all()
    np.testing.assert_allclose(top.logprobs.astype(np.float32), ref_values.numpy(), atol=2e-3)
    data = serialize_topk(top)
    back = deserialize_topk(data)
    assert (back.indices == top.indices).all() and (back.logprobs == top.logprobs).all()
    assert back.vocab_size == 1000
    # 6 x 8 fp16 values + 6 x 8 uint16 indices + the int32 vocabulary size
    assert _data_bytes(data) == 6 * 8 * 2 + 6 * 8 * 2 + 4


def test_large_vocabularies_use_int32_indices_and_full_vocab_has_none():
    big = top_k_of(torch.randn(2, 70_000), 4)
    assert big.indices.dtype == np.int32
    assert _data_bytes(serialize_topk(big)) == 2 * 4 * 2 + 2 * 4 * 4 + 4
    full = top_k_of(torch.randn(3, 50), 0)
    assert full.indices is None and full.logprobs.shape == (3, 50)
    back = deserialize_topk(serialize_topk(full))
    assert back.indices is None and back.logprobs.shape == (3, 50)
    np.testing.assert_allclose(np.exp(back.logprobs.astype(np.float64)).sum(axis=1), 1.0, atol=1e-2)


def _client(probs: dict[int, float], vocab: int = 6):
    idx = np.array([list(probs)])
    return from_arrays(np.log(np.array([list(probs.values())])), idx, vocab)


def _as_dict(target: SparseTarget, row: int = 0) -> dict[int, float]:
    valid = target.valid[row]
    return {int(i): float(p) for i, p in zip(target.indices[row][valid], target.probs[row][valid], strict=True)}


def test_sparse_aggregation_matches_a_hand_computed_reference():
    a = _client({0: 0.5, 1: 0.3})  # weight 1
    b = _client({1: 0.6, 2: 0.2})  # weight 3
    got = _as_dict(aggregate([a, b], [1.0, 3.0]))
    # token 0: only a sent it -> 0.5; token 1: (1*0.3 + 3*0.6) / 4 = 0.525; token 2: only b -> 0.2
    raw = {0: 0.5, 1: 0.525, 2: 0.2}
    expected = {k: v / sum(raw.values()) for k, v in raw.items()}
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=2e-3)
    # zero-padding the missing entries would give token 0 only 1/4 of a's 0.5: not what we do
    zero_padded = {0: 0.125, 1: 0.525, 2: 0.15}
    zp = {k: v / sum(zero_padded.values()) for k, v in zero_padded.items()}
    assert abs(got[0] - zp[0]) > 0.1


def test_confidence_weighting_scales_each_client_by_its_top1_probability():
    a = _client({0: 0.5, 1: 0.3})
    b = _client({1: 0.6, 2: 0.2})
    got = _as_dict(aggregate([a, b], [1.0, 3.0], confidence=True))
    wa, wb = 1.0 * 0.5, 3.0 * 0.6
    raw = {0: 0.5, 1: (wa * 0.3 + wb * 0.6) / (wa + wb), 2: 0.2}
    for k, v in raw.items():
        assert got[k] == pytest.approx(v / sum(raw.values()), abs=2e-3)


def test_aggregation_checks_positions_agree():
    with pytest.raises(ValueError, match="different numbers of positions"):
        aggregate([top_k_of(torch.randn(2, 10), 3), top_k_of(torch.randn(3, 10), 3)], [1.0, 1.0])


def test_sparse_kl_is_zero_at_the_target_and_positive_elsewhere():
    torch.manual_seed(1)
    logits = torch.randn(4, 30)
    target = SparseTarget.from_topk(top_k_of(logits, 0, temperature=2.0))  # full support
    assert float(sparse_kl(logits, target, 2.0)) == pytest.approx(0.0, abs=1e-2)
    other = float(sparse_kl(torch.randn(4, 30), target, 2.0))
    assert other > 0.1
    # on a top-k support, mass the student puts elsewhere still costs
    sparse = SparseTarget.from_topk(top_k_of(logits, 3))
    assert float(sparse_kl(logits, sparse)) > 0
    kl_manual = 0.0
    logq = torch.log_softmax(logits, dim=-1)
    for row in range(4):
        d = _as_dict(sparse, row)
        kl_manual += sum(p * (math.log(p) - float(logq[row, j])) for j, p in d.items())
    assert float(sparse_kl(logits, sparse)) == pytest.approx(kl_manual / 4, rel=1e-2)
