"""KD-FedLLM's client student: a subset of the server LLM's decoder blocks.

Deriving the student from the server's model keeps the vocabulary (so logits align token for
token) and the embeddings, final norm and head, which a shallow copy reuses as they are.
Which blocks to keep is a scenario option (``framework.kd.student_layers``):

- ``first:N``: blocks [0, N) (naive layer dropping: the head then reads a representation it
  was never trained on, which is why it learns slowly),
- ``every:N``: every N-th block, always ending with the last one (keeps the depth profile),
- ``0-7,28,29``: an explicit list of block indices and ranges.

The default keeps every block and stores them int8 (``kd.student_quantization``): on the
bundled SmolLM2-135M no block subset measured here learnt the task within a federated run's
budget (docs/kd.md has the table), while the int8 full-depth student starts from the
model's own zero-shot accuracy at 40% of its fp32 memory.
"""

from __future__ import annotations

import re

import torch

from testbed.modeling import load_base_model

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def student_layers(spec: str, n_layers: int) -> tuple[int, ...]:
    """The kept block indices (sorted, unique) for a `student_layers` spec; ValueError names
    what was expected."""
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind in ("first", "every"):
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"'{spec}': expected {kind}:N with N >= 1")
        n = int(arg)
        if kind == "first":
            if n > n_layers:
                raise ValueError(f"'{spec}': the model has {n_layers} blocks")
            return tuple(range(n))
        return tuple(sorted({*range(n_layers - 1, -1, -n)}))  # ends with the last block
    kept: set[int] = set()
    for part in spec.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise ValueError(f"'{spec}': expected first:N, every:N or a list like 0-7,28,29; bad part '{part}'")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo or hi >= n_layers:
            raise ValueError(f"'{spec}': block range {part.strip()} outside 0..{n_layers - 1}")
        kept.update(range(lo, hi + 1))
    return tuple(sorted(kept))


def keep_blocks(model, layers: tuple[int, ...]):
    """Drop every decoder block of `model` not in `layers` (in place); returns the model.
    The config and each attention's cache index follow, so generation and exports work."""
    decoder = model.get_decoder()
    blocks = decoder.layers
    decoder.layers = torch.nn.ModuleList([blocks[i] for i in layers])
    for new_idx, block in enumerate(decoder.layers):
        if hasattr(block, "self_attn") and hasattr(block.self_attn, "layer_idx"):
            block.self_attn.layer_idx = new_idx
    cfg = model.config
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in layers]
    cfg.num_hidden_layers = len(layers)
    return model


def load_student(model_dir: str, spec: str):
    """The frozen student: the server model's blocks chosen by `spec`, nothing else changed."""
    model = load_base_model(model_dir)
    layers = student_layers(spec, model.config.num_hidden_layers)
    if len(layers) == model.config.num_hidden_layers:
        return model
    return keep_blocks(model, layers)

