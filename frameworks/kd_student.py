"""KD-FedLLM's client student: a subset of the server LLM's decoder blocks.

Deriving the student from the server's model keeps the vocabulary (so logits align token for
token) and the embeddings, final norm and head, which a shallow copy reuses as they are.
Which blocks to keep is a scenario option (``framework.kd.student_layers``):

- ``first:N``: blocks [0, N) (naive layer dropping: the head then reads a representation it
  was never trained on, which is why it learns slowly),
- ``every:N``: every N-th block, always ending with the last one (keeps the depth profile),
- ``0-7,28,29``: an explicit list of block indices and ranges.
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


def distill_student(student, teacher, batches, *, steps: int, lr: float, targets: tuple[str, ...], rank: int,
                    seed: int, progress=None):
    """Distil `teacher` into `student` once, before federated training: LoRA on `targets`
    trained to match the teacher's next-token distribution at every real token of the
    `batches` (an iterable of (input_ids, attention_mask), cycled), then merged into the
    student's weights. Returns (the merged student, per-step KL)."""
    from testbed.modeling import attach_lora
    from testbed.scenario import LoraConfig

    lora = LoraConfig(r=rank, alpha=2 * rank, targets=targets)
    model = attach_lora(student, lora, seed=seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches = list(batches)
    losses = []
    model.train()
    for step in range(steps):
        ids, mask = batches[step % len(batches)]
        with torch.no_grad():
            target = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        logq = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        real = mask.bool()
        kl = (target.exp() * (target - logq)).sum(dim=-1)[real].mean()
        opt.zero_grad(set_to_none=True)
        kl.backward()
        opt.step()
        losses.append(float(kl.detach()))
        if progress is not None:
            progress(step, float(kl.detach()))
    model.eval()
    merged = model.merge_and_unload()
    merged.requires_grad_(False)
    return merged, losses
