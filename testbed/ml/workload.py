"""What a piece of model work costs, in FLOPs and bytes moved: the workload models that the
roofline conversion (testbed.host.roofline) turns into device time. Pure arithmetic on model
sizes, so frameworks can describe their work without touching the host."""

from __future__ import annotations

import math
from dataclasses import dataclass
from testbed.config.wiretypes import wire_type

# LoRA step estimate (see lora_training_workload)
WEIGHT_READS_PER_TRAINING_STEP = 3.0
OPTIMIZER_BYTES_PER_TRAINABLE = 32.0  # fp32 AdamW: param r+w, grad w+r, m r+w, v r+w


def positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f'"{name}" must be > 0 and finite, got {value}.')


@wire_type("Workload")
@dataclass(frozen=True)
class Workload:
    flops: float  # floating-point operations of the work
    bytes_moved: float  # bytes moved between memory and the cores

    def __post_init__(self) -> None:
        positive("flops", self.flops)
        positive("bytes_moved", self.bytes_moved)

    @property
    def arithmetic_intensity(self) -> float:
        """FLOP per byte."""
        return self.flops / self.bytes_moved



def _check_model(n_params: int, tokens: int, weight_bytes_per_param: float) -> None:
    positive("n_params", n_params)
    positive("tokens", tokens)
    positive("weight_bytes_per_param", weight_bytes_per_param)


def forward_workload(
    *, n_params: int, tokens: int, weight_bytes_per_param: float = 4.0
) -> Workload:
    """A forward pass over ``tokens`` tokens: 2 FLOP per parameter per token; weights read once.

    Attention's score FLOPs (quadratic in sequence length) and activation traffic are left out:
    small next to the weight matmuls at the sequence lengths used here.
    """
    _check_model(n_params, tokens, weight_bytes_per_param)
    return Workload(flops=2.0 * n_params * tokens, bytes_moved=n_params * weight_bytes_per_param)


def lora_training_workload(
    *, n_params: int, n_trainable: int, tokens: int, weight_bytes_per_param: float = 4.0
) -> Workload:
    """One training step over ``tokens`` tokens when only ``n_trainable`` parameters learn.

    FLOPs (``n_params`` counts every parameter, adapters included; no activation recompute):
      forward                                  2 * n_params * tokens
      backward, activation gradients           2 * n_params * tokens (through frozen weights too)
      backward, weight gradients               2 * n_trainable * tokens (trainable weights only)
    Bytes: the weights are read WEIGHT_READS_PER_TRAINING_STEP (3) times: forward, backward, and
    once more for the transposed weight reads of the backward matmuls; plus
    OPTIMIZER_BYTES_PER_TRAINABLE (32) per trainable parameter for fp32 AdamW state and
    gradients. Attention score FLOPs and activation traffic are left out, so the intensity is
    an upper estimate.
    """
    _check_model(n_params, tokens, weight_bytes_per_param)
    if not 0 <= n_trainable <= n_params:
        raise ValueError(f'"n_trainable" must be in [0, n_params], got {n_trainable}.')
    flops = (4.0 * n_params + 2.0 * n_trainable) * tokens
    weight_bytes = WEIGHT_READS_PER_TRAINING_STEP * n_params * weight_bytes_per_param
    optimizer_bytes = OPTIMIZER_BYTES_PER_TRAINABLE * n_trainable
    return Workload(flops=flops, bytes_moved=weight_bytes + optimizer_bytes)
