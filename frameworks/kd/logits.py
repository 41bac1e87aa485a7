"""Logits that travel in KD-FedLLM: per-token top-k log-probabilities, their wire format,
their aggregation over clients, and the distillation loss against them.

A position's knowledge is the k most likely next tokens with their log-probabilities at the
distillation temperature (fp16 values, uint16 indices when the vocabulary fits in 16 bits,
else int32), or the whole vocabulary (``top_k: 0``: values only, no indices). The payload is
the safetensors serialisation of those arrays: its length is what the network times.

Aggregation is over the union of the indices the clients sent for a position: a token's
probability is the weighted mean over the clients that reported it (its weight renormalised
among them), never a zero for the clients whose top-k missed it; the result is renormalised
over the union. Weights are client sample counts, optionally times each client's confidence
at that position (its top-1 probability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load as np_load
from safetensors.numpy import save as np_save

UINT16_VOCAB = 2**16


@dataclass(frozen=True)
class TopK:
    """(N, k) log-probabilities and token indices of N positions; indices None = full vocab."""

    logprobs: np.ndarray  # (N, k) or (N, V) float16
    indices: np.ndarray | None  # (N, k) uint16/int32, None when the full vocabulary is sent
    vocab_size: int

    @property
    def n_positions(self) -> int:
        return int(self.logprobs.shape[0])


def top_k_of(logits: torch.Tensor, k: int, temperature: float = 1.0) -> TopK:
    """The wire form of (N, V) logits: top-k of log_softmax(logits / T), or all of it (k=0)."""
    logp = F.log_softmax(logits.detach().float() / temperature, dim=-1)
    vocab = int(logp.shape[-1])
    if k <= 0 or k >= vocab:
        return TopK(logp.cpu().numpy().astype(np.float16), None, vocab)
    values, idx = torch.topk(logp, k, dim=-1)
    return from_arrays(values.cpu().numpy(), idx.cpu().numpy(), vocab)


def from_arrays(logprobs: np.ndarray, indices: np.ndarray | None, vocab_size: int) -> TopK:
    """A TopK in wire dtypes (fp16 values, the narrowest index type that holds the vocab)."""
    if indices is not None:
        indices = indices.astype(np.uint16 if vocab_size <= UINT16_VOCAB else np.int32)
    return TopK(np.ascontiguousarray(logprobs, dtype=np.float16), indices, vocab_size)


def serialize_topk(top: TopK) -> bytes:
    arrays = {"logprobs": top.logprobs, "vocab_size": np.array([top.vocab_size], dtype=np.int32)}
    if top.indices is not None:
        arrays["indices"] = np.ascontiguousarray(top.indices)
    return np_save(arrays)


def deserialize_topk(data: bytes) -> TopK:
    arrays = np_load(data)
    return TopK(arrays["logprobs"], arrays.get("indices"), int(arrays["vocab_size"][0]))


@dataclass(frozen=True)
class SparseTarget:
    """A distillation target: per position, probabilities over a set of token indices.
    Rows are padded to the widest union with index 0 and probability 0 (masked by `valid`)."""

    indices: torch.Tensor  # (N, U) int64
    probs: torch.Tensor  # (N, U) float32, rows sum to 1 over valid entries
    valid: torch.Tensor  # (N, U) bool

    @classmethod
    def from_topk(cls, top: TopK) -> SparseTarget:
        return aggregate([top], [1.0])


def aggregate(tops: list[TopK], weights: list[float], *, confidence: bool = False) -> SparseTarget:
    """Combine the clients' TopK for the same N positions into one SparseTarget.

    For each position and each token in the union of the clients' indices:
    p(token) = sum_c w_c p_c(token) / sum_c w_c, both sums over the clients c that sent the
    token, with w_c = weights[c] (times c's top-1 probability at the position when
    `confidence`); then p is renormalised over the union.
    """
    if not tops:
        raise ValueError("aggregate needs at least one client's logits")
    n = tops[0].n_positions
    if any(t.n_positions != n for t in tops):
        raise ValueError(f"clients sent logits for different numbers of positions: {[t.n_positions for t in tops]}")
    rows_idx, rows_p = [], []
    for pos in range(n):
        num: dict[int, float] = {}
        den: dict[int, float] = {}
        for top, w in zip(tops, weights, strict=True):
            logp = top.logprobs[pos].astype(np.float64)
            idx = np.arange(top.vocab_size) if top.indices is None else top.indices[pos].astype(np.int64)
            probs = np.exp(logp)
            wc = w * float(probs.max()) if confidence else w
            for j, p in zip(idx.tolist(), probs.tolist()):
                num[j] = num.get(j, 0.0) + wc * p
                den[j] = den.get(j, 0.0) + wc
        idx = np.fromiter(num.keys(), dtype=np.int64, count=len(num))
        p = np.array([num[j] / den[j] for j in num])
        rows_idx.append(idx)
        rows_p.append(p / p.sum())
    return _pack_rows(rows_idx, rows_p)


def _pack_rows(rows_idx: list[np.ndarray], rows_p: list[np.ndarray]) -> SparseTarget:
    width = max(len(r) for r in rows_idx)
    n = len(rows_idx)
    indices = torch.zeros((n, width), dtype=torch.long)
    probs = torch.zeros((n, width), dtype=torch.float32)
    valid = torch.zeros((n, width), dtype=torch.bool)
    for i, (idx, p) in enumerate(zip(rows_idx, rows_p, strict=True)):
        order = np.argsort(idx, kind="stable")  # deterministic layout
        indices[i, : len(idx)] = torch.from_numpy(idx[order])
        probs[i, : len(idx)] = torch.from_numpy(p[order].astype(np.float32))
        valid[i, : len(idx)] = True
    return SparseTarget(indices, probs, valid)


def sparse_kl(student_logits: torch.Tensor, target: SparseTarget, temperature: float = 1.0) -> torch.Tensor:
    """Mean over positions of KL(target || student) on the target's support, times T^2.

    The student's probabilities are its full-vocabulary softmax at temperature T, read at the
    support (not renormalised), so mass the student puts outside the support also costs;
    the value is >= 0 and 0 only when the student matches the target there exactly.
    """
    logq = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, V)
    device = logq.device
    idx, p, valid = target.indices.to(device), target.probs.to(device), target.valid.to(device)
    logq_s = logq.gather(1, idx)  # (N, U)
    logp = torch.where(valid, p.clamp_min(1e-12).log(), torch.zeros_like(p))
    kl = (p * (logp - logq_s)).masked_fill(~valid, 0.0).sum(dim=1)  # (N,)
    return kl.mean() * temperature**2
