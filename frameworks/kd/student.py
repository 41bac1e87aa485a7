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

import torch

from testbed.config.student_layers import student_layers
from testbed.ml.modeling import load_base_model


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

