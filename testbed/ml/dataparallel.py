"""Data parallelism inside one client: each batch split across single-thread worker processes.

On a few host cores, two processes that each run one torch thread on half of a batch train
faster than one process running two intra-op threads on all of it (torch's intra-op pool
leaves a core idle on every op too small to split; measured here on SmolLM2-135M, LoRA r=8,
batch 8 x 103 tokens: 2.71-2.90 s against 2.88-3.29 s a step), while two Python threads in one
process do worse than either (they contend for the GIL). So under `emulation.workers:
data_parallel` the process backend starts one single-thread process per core ("ranks"), each
hosting every client; a client's call runs on all ranks at once. Each rank takes its
contiguous share of every batch's rows, and before every optimizer step the ranks sum their
gradients (and losses) with torch.distributed over gloo on the loopback interface, so every
rank applies the same update and holds the same adapter. A rank's loss is weighted by its
share of the batch's supervised tokens: the sum is the batch's mean loss, so the math is
the batch's (up to float summation order).

Device time stays honest because the host is calibrated the same way: every rank measures
its core at once, and the client's host rate is their sum (`sum_calibrations`).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from testbed.ml.task import IGNORE_INDEX


def init(rank: int, world: int, store_path: str, *, timeout_s: float) -> None:
    """Join this process to its client group (blocks until all `world` ranks have joined).
    The rendezvous is a file; gloo's own connections stay on the loopback interface."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))


def group() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a data-parallel group."""
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def shard(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """Rank `rank`'s contiguous share of the batch's rows (shares differ by at most one row)."""
    n = next(iter(batch.values())).shape[0]
    if n < world:
        raise ValueError(f"a batch of {n} rows cannot be split across {world} data-parallel ranks")
    rows = share(n, rank, world)
    return {k: v[rows] for k, v in batch.items()}


def share(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous share of `n` items (shares differ by at most one item)."""
    return slice(rank * n // world, (rank + 1) * n // world)


def supervised_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss (as testbed.ml.task.label_loss counts them)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def sum_across_ranks(params: list[torch.nn.Parameter], loss: torch.Tensor) -> float:
    """Sum every parameter's gradient and `loss` over the group, in place; returns the summed
    loss. One flat all-reduce per step (LoRA adapters are small: 1.8 MB for SmolLM2 r=8 q/v)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.detach().reshape(1).float()])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
        offset += n
    return float(flat[-1])


def all_reduce_sum(values: torch.Tensor) -> None:
    """Sum `values` over the group, in place (evaluation shares' counts and losses)."""
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
