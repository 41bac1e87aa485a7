"""Split-FedLLM's model cut: a Llama-style decoder split at layer k into a client and a server part.

The client holds the token embeddings and decoder blocks ``[0, k)``; the server holds blocks
``[k, L)``, the final norm and the LM head. Per micro-batch the client sends up its cut
activations (B, T, C) with the small things the server needs to continue: the 2D attention
mask, the position ids when they are not the default ``0..T-1``, and the labels (the loss is
computed on the server). The server runs forward and backward and sends down the gradient of
the cut activations; the client backpropagates it through its own blocks.

Neither the 4D causal+padding mask nor the rotary (cos, sin) tables travel: each side rebuilds
them from the 2D mask and position ids with the same library calls ``LlamaModel.forward``
makes (``masking_utils.create_causal_mask`` and the model's own rotary-embedding module), so
the two parts together compute exactly what the unsplit model computes.

Payloads are serialised with safetensors, as adapter payloads are; their byte count is what
the network simulator times. Activations and gradients can travel as fp32, fp16, bf16 or
int8 (symmetric, one fp32 scale per token).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from testbed.ml.task import IGNORE_INDEX, causal_lm

Compression = Literal["fp32", "fp16", "bf16", "int8"]
COMPRESSIONS: tuple[str, ...] = get_args(Compression)

_FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_INT8_MAX = 127.0
# fp16 payloads are scaled by a power of two (exact) so that the largest magnitude lands in
# [2**14, 2**15): no overflow past 65504, and small gradients stay out of the subnormal range.
_FP16_TARGET_EXP = 14


# --------------------------------------------------------------------------- cut validation


def _decoder(model) -> nn.Module:
    """The decoder stack (``LlamaModel``) of a causal LM, PEFT-wrapped or not."""
    decoder = causal_lm(model).get_decoder()
    for attr in ("embed_tokens", "layers", "norm", "rotary_emb", "config"):
        if not hasattr(decoder, attr):
            raise TypeError(
                f"split_model needs a Llama-style decoder (embed_tokens, layers, norm, rotary_emb); "
                f"{type(decoder).__name__} has no '{attr}'"
            )
    return decoder


def split_points(model) -> int:
    """Number of decoder layers L of `model`; a valid cut is any k with 1 <= k < L."""
    decoder = _decoder(model)
    return min(len(decoder.layers), int(decoder.config.num_hidden_layers))


def check_cut_layer(model, cut_layer: int) -> int:
    """`cut_layer` itself when 1 <= cut_layer < L, else ValueError naming the valid range."""
    n_layers = split_points(model)
    if isinstance(cut_layer, bool) or not isinstance(cut_layer, int) or not 1 <= cut_layer < n_layers:
        raise ValueError(
            f"cut_layer must satisfy 1 <= cut_layer < {n_layers} (valid range 1..{n_layers - 1} "
            f"for this {n_layers}-layer model), got {cut_layer!r}"
        )
    return cut_layer


# --------------------------------------------------------------------------- the two parts


@dataclass
class CutActivations:
    """What crosses the cut upwards for one micro-batch."""

    hidden: torch.Tensor  # (B, T, C) residual stream after block k-1
    attention_mask: torch.Tensor  # (B, T) int, 1 = real token, 0 = padding
    position_ids: torch.Tensor | None = None  # (B, T) or (1, T); None = default 0..T-1
    labels: torch.Tensor | None = None  # (B, T) with IGNORE_INDEX off the supervised tokens


def _default_positions(length: int, device: torch.device) -> torch.Tensor:
    """(1, T) positions 0..T-1, as ``LlamaModel.forward`` builds them without a cache."""
    return torch.arange(length, device=device).unsqueeze(0)


def _run_blocks(
    layers: nn.ModuleList, config, rotary_emb: nn.Module, hidden: torch.Tensor,
    attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
) -> torch.Tensor:
    """Decoder blocks over `hidden`, with the mask and rotary tables built the library's way."""
    from transformers.masking_utils import create_causal_mask

    if position_ids is None:
        position_ids = _default_positions(hidden.shape[1], hidden.device)
    attention_mask = attention_mask.to(hidden.device)
    position_ids = position_ids.to(hidden.device)
    mask = create_causal_mask(
        config=config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None, position_ids=position_ids,
    )
    position_embeddings = rotary_emb(hidden, position_ids=position_ids)
    for layer in layers:
        out = layer(hidden, attention_mask=mask, position_embeddings=position_embeddings,
                    position_ids=position_ids, use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out  # older releases return a tuple
    return hidden


class ClientPart(nn.Module):
    """Embeddings and decoder blocks [0, k) of `model` (shared modules, LoRA layers included)."""

    def __init__(self, model, cut_layer: int) -> None:
        super().__init__()
        decoder = _decoder(model)
        if len(decoder.layers) != cut_layer:  # a model loaded with only its first k blocks is fine as it is
            check_cut_layer(model, cut_layer)
        self.cut_layer = cut_layer
        self.config = decoder.config
        self.embed_tokens = decoder.embed_tokens
        self.layers = nn.ModuleList(list(decoder.layers[:cut_layer]))
        self.rotary_emb = decoder.rotary_emb

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None,
    ) -> CutActivations:
        input_ids = input_ids.to(self.device)
        hidden = self.embed_tokens(input_ids)  # (B, T, C)
        hidden = _run_blocks(self.layers, self.config, self.rotary_emb, hidden, attention_mask, position_ids)
        return CutActivations(
            hidden=hidden,
            attention_mask=attention_mask.to(device=hidden.device, dtype=torch.long),
            position_ids=None if position_ids is None else position_ids.to(hidden.device),
        )


class ServerPart(nn.Module):
    """Decoder blocks [k, L), the final norm and the LM head of `model` (shared modules)."""

    def __init__(self, model, cut_layer: int) -> None:
        super().__init__()
        check_cut_layer(model, cut_layer)
        decoder = _decoder(model)
        n_layers = split_points(model)
        self.cut_layer = cut_layer
        self.config = decoder.config
        self.layers = nn.ModuleList(list(decoder.layers[cut_layer:n_layers]))
        self.norm = decoder.norm
        self.rotary_emb = decoder.rotary_emb
        self.lm_head = causal_lm(model).get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C) final hidden states (after the final norm, before the LM head)."""
        hidden = _run_blocks(self.layers, self.config, self.rotary_emb, hidden, attention_mask, position_ids)
        return self.norm(hidden)

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, V) logits of the rows of `hidden` (N, C) only, as ``testbed.ml.task.head_logits``."""
        return self.lm_head(hidden)


def server_label_loss(
    server_part: ServerPart, hidden_in: torch.Tensor, batch: Mapping[str, torch.Tensor | None],
) -> torch.Tensor:
    """Mean cross-entropy of the supervised tokens from the cut activations `hidden_in`.

    `batch` needs ``attention_mask`` and ``labels`` (B, T), and may carry ``position_ids``;
    the same quantity as ``testbed.ml.task.label_loss`` on the unsplit model.
    """
    device = hidden_in.device
    labels = batch["labels"].to(device)  # (B, T)
    hidden = server_part(hidden_in, batch["attention_mask"], batch.get("position_ids"))  # (B, T, C)
    rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)  # position p predicts p + 1
    logits = server_part.head_logits(hidden[rows, cols])  # (N, V)
    return F.cross_entropy(logits.float(), labels[rows, cols + 1])


# --------------------------------------------------------------------------- serialisation


def _check_compression(dtype: str) -> None:
    if dtype not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {dtype!r}")


def _encode(name: str, x: torch.Tensor, dtype: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata entries holding `x` (float, last dim = features) in `dtype`."""
    _check_compression(dtype)
    x = x.detach().to("cpu", torch.float32)
    if dtype == "int8":
        absmax = x.abs().amax(dim=-1)  # per token
        scale = torch.where(absmax > 0, absmax / _INT8_MAX, torch.ones_like(absmax))
        q = torch.round(x / scale.unsqueeze(-1)).clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8)
        return {name: q.contiguous(), f"{name}.scale": scale.contiguous()}, {}
    if dtype == "fp16":
        absmax = float(x.abs().max()) if x.numel() else 0.0
        exp = 0 if absmax == 0 or not math.isfinite(absmax) else _FP16_TARGET_EXP - math.floor(math.log2(absmax))
        exp = max(-100, min(100, exp))
        scaled = (x.to(torch.float64) * 2.0**exp).to(torch.float16)
        return {name: scaled.contiguous()}, {f"{name}.exp2": str(exp)}
    return {name: x.to(_FLOAT_DTYPES[dtype]).contiguous()}, {}


def _decode(name: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str], dtype: str) -> torch.Tensor:
    """The float32 tensor `_encode` stored under `name`."""
    data = tensors[name]
    if dtype == "int8":
        return data.to(torch.float32) * tensors[f"{name}.scale"].unsqueeze(-1)
    out = data.to(torch.float32)
    if dtype == "fp16":
        out = out * 2.0 ** -int(meta[f"{name}.exp2"])
    return out


def _read(data: bytes, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = st_load(data)
    meta = _metadata(data)
    if meta.get("kind") != kind:
        raise ValueError(f"payload is a {meta.get('kind')!r} payload, expected {kind!r}")
    return tensors, meta


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors byte string (st_load drops it)."""
    header_len = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}


def pack_activations(acts: CutActivations, *, dtype: Compression = "fp32") -> bytes:
    """The upward payload: cut activations in `dtype` plus mask, positions and labels (if set)."""
    tensors, meta = _encode("hidden", acts.hidden, dtype)
    mask = acts.attention_mask.detach().to("cpu")
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("attention_mask must hold only 0 and 1")
    tensors["attention_mask"] = mask.to(torch.uint8).contiguous()
    if acts.position_ids is not None:
        tensors["position_ids"] = acts.position_ids.detach().to("cpu", torch.int32).contiguous()
    if acts.labels is not None:
        tensors["labels"] = acts.labels.detach().to("cpu", torch.int32).contiguous()
    meta.update(kind="cut_activations", dtype=dtype)
    return st_save(tensors, metadata=meta)


def unpack_activations(data: bytes) -> CutActivations:
    """`pack_activations` undone: hidden as float32 (dequantised), integer tensors as int64."""
    tensors, meta = _read(data, "cut_activations")
    hidden = _decode("hidden", tensors, meta, meta["dtype"])
    opt = {k: tensors[k].to(torch.long) if k in tensors else None for k in ("position_ids", "labels")}
    return CutActivations(hidden=hidden, attention_mask=tensors["attention_mask"].to(torch.long), **opt)


def pack_tensor(tensor: torch.Tensor, *, dtype: Compression = "fp32") -> bytes:
    """A float tensor (e.g. the gradient of the cut activations) as a payload in `dtype`;
    int8 uses one symmetric scale per row of the last dimension (per token)."""
    tensors, meta = _encode("tensor", tensor, dtype)
    meta.update(kind="tensor", dtype=dtype)
    return st_save(tensors, metadata=meta)


def unpack_tensor(data: bytes) -> torch.Tensor:
    """`pack_tensor` undone, as float32."""
    tensors, meta = _read(data, "tensor")
    return _decode("tensor", tensors, meta, meta["dtype"])


# --------------------------------------------------------------------------- one split step


def split_step(
    client_part: ClientPart, server_part: ServerPart, batch: Mapping[str, torch.Tensor], *,
    compression: Compression = "fp32",
) -> tuple[torch.Tensor, int, int]:
    """One split training step in one process: (detached loss, bytes up, bytes down).

    Client forward -> pack -> unpack (as if transferred) -> server forward + loss + backward ->
    gradient of the received activations -> pack -> unpack -> client backward. Leaves ``.grad``
    on the trainable parameters of both parts (accumulated, as ``loss.backward()`` would);
    with fp32 they equal the unsplit model's. Zeroing grads and stepping optimisers is the
    caller's job.
    """
    _check_compression(compression)
    acts = client_part(batch["input_ids"], batch["attention_mask"], batch.get("position_ids"))
    hidden_client = acts.hidden
    up = pack_activations(dataclasses.replace(acts, labels=batch["labels"]), dtype=compression)

    received = unpack_activations(up)
    hidden_in = received.hidden.to(server_part.device, server_part.dtype).requires_grad_()
    server_batch = {"attention_mask": received.attention_mask, "position_ids": received.position_ids,
                    "labels": received.labels}
    loss = server_label_loss(server_part, hidden_in, server_batch)
    loss.backward()

    down = pack_tensor(hidden_in.grad, dtype=compression)
    grad = unpack_tensor(down).to(hidden_client.device, hidden_client.dtype)
    if hidden_client.requires_grad:
        hidden_client.backward(grad)
    return loss.detach(), len(up), len(down)
