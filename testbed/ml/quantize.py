"""Weight-only quantization of a frozen base model: the QLoRA-like local submodel of a client.

A client keeps its copy of the base model's linear layers in int8 or int4 and trains LoRA
adapters in full precision on top. Only weights are quantized; activations stay in the
model's float dtype, and every forward dequantizes the layer's weight on the fly (nothing
dequantized is kept, so the memory saving is real).

Schemes (chosen by measured reconstruction error and loss, see benchmarks/quantization.py):

- ``int8``: symmetric, per output channel. ``q = round(w / s)`` in [-127, 127] with one
  float32 scale ``s = max|w_row| / 127`` per row; ``|w - q s| <= s / 2``.
- ``int4``: asymmetric, group-wise along the input dim (``group_size`` values per group,
  default 64). ``q = round((w - m) / s)`` in [0, 15] with a float16 offset ``m`` (the group's
  minimum, the zero point) and float16 scale ``s = (max - m) / 15`` per group; two values
  per byte. ``|w - (q s + m)| <= s / 2``. Asymmetric beat symmetric (codes in [-7, 7],
  ``s = max|w| / 7``) at group size 64 on both bundled models: relative weight error 0.080
  vs 0.113 and article NLL +0.33 vs +0.41 nats/token on SmolLM2-135M; weight error 0.090
  vs 0.107 on the random tiny Llama.

PEFT integration: ``QuantizedLinear`` subclasses ``nn.Linear`` with no weight parameter, a
read-only ``weight`` property that dequantizes, and its own forward. PEFT's default LoRA
dispatcher therefore wraps it as a plain linear layer (``attach_lora`` and
``target_modules="all-linear"`` work unchanged), and its forward calls ours. Merging an
adapter into a quantized base (``merge_adapter``, ``merge_and_unload``) is not supported:
PEFT would add the update to a temporary dequantized copy, and the adapter would silently
drop out of the output. Only adapter tensors travel in this testbed, so nothing merges.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Scheme = Literal["int8", "int4"]
ModelScheme = Literal["none", "int8", "int4"]
SCHEMES: tuple[str, ...] = ("int8", "int4")
MODEL_SCHEMES: tuple[str, ...] = ("none", *SCHEMES)
INT8_QMAX = 127  # int8 codes span [-127, 127] (symmetric: -128 unused)
INT4_LEVELS = 15  # int4 codes span [0, 15]
DEFAULT_GROUP_SIZE = 64
MEMORY_KEYS = ("quantized_weights", "scales", "other_params", "total")
_MIB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Rounding of scales to float16, in a chosen direction


def _fp16_at_least(x: torch.Tensor) -> torch.Tensor:
    """The smallest float16 >= x (elementwise): a stored scale never shrinks the code range."""
    y = x.to(torch.float16)
    if not torch.isfinite(y).all():
        raise ValueError("weights too large for float16 int4 scales (|w| > ~9e5)")
    up = torch.nextafter(y, torch.full_like(y, float("inf")))
    return torch.where(y.float() < x, up, y)


def _fp16_at_most(x: torch.Tensor) -> torch.Tensor:
    """The largest float16 <= x (elementwise): a stored offset never exceeds the group minimum."""
    y = x.to(torch.float16)
    if not torch.isfinite(y).all():
        raise ValueError("weights too large for float16 int4 offsets (|w| > 65504)")
    down = torch.nextafter(y, torch.full_like(y, float("-inf")))
    return torch.where(y.float() > x, down, y)


# ---------------------------------------------------------------------------------------------
# int8: symmetric, per output channel


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, I) float -> codes (O, I) int8 and scales (O,) float32."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / INT8_QMAX  # (O,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale
    q = (w / scale[:, None]).round().clamp(-INT8_QMAX, INT8_QMAX)  # (O, I)
    return q.to(torch.int8), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(O, I) int8 codes and (O,) scales -> (O, I) weight in `dtype` (computed in float32)."""
    return (q.float() * scale.float()[:, None]).to(dtype)


# ---------------------------------------------------------------------------------------------
# int4: asymmetric, group-wise along the input dim, two codes per byte


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(..., 2k) codes in [0, 15] -> (..., k) uint8; element 2j in the low nibble, 2j+1 high."""
    if q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dim, got {q.shape[-1]}")
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(..., k) uint8 -> (..., 2k) uint8 codes in [0, 15] (inverse of `pack_int4`)."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)


def _check_group_size(group_size: int) -> None:
    if not isinstance(group_size, int) or group_size <= 0 or group_size % 2:
        raise ValueError(f'"group_size" must be a positive even int, got {group_size!r}')


def _pad_to_groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """(O, I) -> (O, G * group_size), repeating the last column (leaves group min/max as they are)."""
    pad = -w.shape[1] % group_size
    return torch.cat((w, w[:, -1:].expand(-1, pad)), dim=1) if pad else w


def quantize_int4(
    weight: torch.Tensor, group_size: int = DEFAULT_GROUP_SIZE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(O, I) float -> packed codes (O, G * group_size / 2) uint8, scales (O, G) and offsets
    (O, G) float16, G = ceil(I / group_size)."""
    _check_group_size(group_size)
    w = _pad_to_groups(weight.detach().float(), group_size)
    groups = w.view(w.shape[0], -1, group_size)  # (O, G, g)
    offset = _fp16_at_most(groups.amin(dim=-1))  # (O, G)
    scale = _fp16_at_least((groups.amax(dim=-1) - offset.float()) / INT4_LEVELS)  # (O, G)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: any scale
    q = ((groups - offset.float()[..., None]) / scale.float()[..., None]).round().clamp(0, INT4_LEVELS)
    return pack_int4(q.flatten(1)), scale, offset


def dequantize_int4(
    packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, in_features: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Packed codes, (O, G) scales and offsets -> (O, in_features) weight in `dtype`."""
    # unpack_int4 in float arithmetic (exact for 0..255): the same in torch and in an ONNX export
    codes = packed.float()  # (O, P)
    high = torch.floor(codes / 16)
    q = torch.stack((codes - 16 * high, high), dim=-1)  # (O, P, 2): low nibble first
    w = torch.addcmul(offset.float()[..., None], q.view(*scale.shape, -1), scale.float()[..., None])  # (O, G, g)
    return w.flatten(1)[:, :in_features].to(dtype)


# ---------------------------------------------------------------------------------------------
# The layer


class _DequantizedLinear(torch.autograd.Function):
    """y = x W^T + b with W dequantized on the fly, in forward and again in backward, so
    autograd keeps only the layer's quantized buffers alive (not a float copy of W per layer).
    W gets no gradient; the bias gets one only if someone made it trainable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor | None, layer: QuantizedLinear) -> torch.Tensor:
        ctx.layer, ctx.x_dtype = layer, x.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return F.linear(x, layer.dequantize(_compute_dtype(x)), bias)  # (..., O)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out @ ctx.layer.dequantize(grad_out.dtype)).to(ctx.x_dtype)  # (..., I)
        if ctx.needs_input_grad[1]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(dim=0).to(ctx.bias_dtype)  # (O,)
        return grad_x, grad_bias, None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a plain nn.Linear would multiply in: the autocast dtype where autocast is on."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class QuantizedLinear(nn.Linear):
    """A frozen, weight-only quantized ``nn.Linear``; see the module docstring for the schemes.

    Buffers (all persistent, so a quantized state dict round-trips):
        qweight  int8 (O, I) for int8; uint8 (O, G * group_size / 2), two codes a byte, for int4
        scale    float32 (O,) for int8; float16 (O, G) for int4
        offset   float16 (O, G), the group minimum (int4 only)
    ``bias`` stays a float parameter, frozen. ``weight`` is a read-only, freshly dequantized
    tensor in the layer's float dtype (the one it was built from; ``.to(dtype)`` changes it,
    and the bias, but leaves the scales as they are).
    """

    def __init__(
        self, in_features: int, out_features: int, *, scheme: Scheme, group_size: int = DEFAULT_GROUP_SIZE,
        bias: bool = True, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
    ) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate a float weight
        _check_layer_args(in_features, out_features, scheme, group_size, dtype)
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        self.group_size = group_size if scheme == "int4" else None
        for name, shape, buf_dtype in _buffer_layout(in_features, out_features, scheme, group_size):
            self.register_buffer(name, torch.zeros(shape, dtype=buf_dtype, device=device))
        # Zero-size marker whose dtype follows `.to(dtype)`: the dtype `weight` reports.
        self.register_buffer("_float_dtype", torch.empty(0, dtype=dtype, device=device), persistent=False)
        b = torch.zeros(out_features, dtype=dtype, device=device)
        self.register_parameter("bias", nn.Parameter(b, requires_grad=False) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: Scheme, *, group_size: int = DEFAULT_GROUP_SIZE) -> QuantizedLinear:
        """A quantized copy of `linear` (same device, bias and float dtype)."""
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, scheme=scheme, group_size=group_size,
                    bias=linear.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            if scheme == "int8":
                layer.qweight, layer.scale = quantize_int8(w)
            else:
                layer.qweight, layer.scale, layer.offset = quantize_int4(w, group_size)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(O, I) weight in `dtype` (default: the layer's float dtype), computed in float32."""
        dtype = dtype or self._float_dtype.dtype
        if self.scheme == "int8":
            return dequantize_int8(self.qweight, self.scale, dtype)
        return dequantize_int4(self.qweight, self.scale, self.offset, self.in_features, dtype)

    def _apply(self, fn, recurse: bool = True):
        """`.to(device)` moves the scales and offsets; `.to(dtype)` / `.half()` never recasts them
        (a bfloat16 scale would loosen the error bound), only the bias and the compute dtype."""
        kept = {name: self._buffers[name] for name in ("scale", "offset") if name in self._buffers}
        super()._apply(fn, recurse)
        for name, original in kept.items():
            moved = self._buffers[name]
            if moved.dtype != original.dtype:
                self._buffers[name] = original.to(moved.device)
        return self

    @property
    def weight(self) -> torch.Tensor:
        """A fresh dequantized copy: read it (shape, dtype, device, values), never write to it."""
        return self.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _DequantizedLinear.apply(x, self.bias, self)  # (..., O)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, scheme={self.scheme}{group}"


def _check_layer_args(in_features: int, out_features: int, scheme: str, group_size: int, dtype: torch.dtype) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f'"scheme" must be one of {", ".join(SCHEMES)}, got {scheme!r}')
    if in_features <= 0 or out_features <= 0:
        raise ValueError(f'"in_features" and "out_features" must be > 0, got {in_features}, {out_features}')
    if scheme == "int4":
        _check_group_size(group_size)
    if not dtype.is_floating_point:
        raise ValueError(f'"dtype" must be a float dtype, got {dtype}')


def _buffer_layout(in_features: int, out_features: int, scheme: str, group_size: int) -> list[tuple]:
    """(name, shape, dtype) of each quantized buffer."""
    if scheme == "int8":
        return [("qweight", (out_features, in_features), torch.int8), ("scale", (out_features,), torch.float32)]
    n_groups = -(-in_features // group_size)
    return [
        ("qweight", (out_features, n_groups * group_size // 2), torch.uint8),
        ("scale", (out_features, n_groups), torch.float16),
        ("offset", (out_features, n_groups), torch.float16),
    ]


# ---------------------------------------------------------------------------------------------
# Whole models (or any part of one)


def quantize_model(
    model: nn.Module, scheme: ModelScheme, *, group_size: int = DEFAULT_GROUP_SIZE,
    skip: tuple[str, ...] = ("lm_head",),
) -> nn.Module:
    """Replace every ``nn.Linear`` of `model` in place by a `QuantizedLinear`; return `model`.

    Works on any module (a whole causal LM, or a ``ModuleList`` of a client's first blocks).
    Left as they are: layers whose name is, or ends with ``.`` + , an entry of `skip`; layers
    whose weight is shared with another module (tied embeddings / LM head); embeddings and
    norms; layers already quantized. ``"none"`` changes nothing. Quantize before attaching
    LoRA: adapters on a quantized base are fine, quantized adapters are not.
    """
    if scheme not in MODEL_SCHEMES:
        raise ValueError(f'"scheme" must be one of {", ".join(MODEL_SCHEMES)}, got {scheme!r}')
    if isinstance(skip, str):
        raise ValueError(f'"skip" must be a tuple of module names, got the string {skip!r}')
    if scheme == "none":
        return model
    if scheme == "int4":
        _check_group_size(group_size)
    _refuse_adapters(model)
    shared = _shared_parameter_ids(model)
    for parent, child_name, child in _linear_children(model, skip):
        if id(child.weight) not in shared:
            setattr(parent, child_name, QuantizedLinear.from_linear(child, scheme, group_size=group_size))
    return model


def _linear_children(model: nn.Module, skip: tuple[str, ...]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute name, layer) of every plain nn.Linear not named in `skip`."""
    found = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            skipped = any(name == s or name.endswith("." + s) for s in skip)
            if isinstance(child, nn.Linear) and not isinstance(child, QuantizedLinear) and not skipped:
                found.append((parent, child_name, child))
    return found


def _shared_parameter_ids(model: nn.Module) -> set[int]:
    """ids of parameters held by more than one module (tied weights)."""
    seen: dict[int, int] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                seen[id(p)] = seen.get(id(p), 0) + 1
    return {pid for pid, count in seen.items() if count > 1}


def _refuse_adapters(model: nn.Module) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ValueError("quantize_model: the model already has PEFT adapters; quantize the base model first")


def model_memory_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of `model`'s parameters and buffers (each tensor once, tied ones included once):
    ``quantized_weights`` (int codes), ``scales`` (scales and offsets), ``other_params``
    (every other parameter and buffer: embeddings, norms, biases, rotary tables) and ``total``."""
    kind_of: dict[int, str] = {}
    for layer in (m for m in model.modules() if isinstance(m, QuantizedLinear)):
        kind_of[id(layer.qweight)] = "quantized_weights"
        kind_of.update({id(getattr(layer, name)): "scales" for name in ("scale", "offset") if hasattr(layer, name)})
    sizes = dict.fromkeys(MEMORY_KEYS[:-1], 0)
    for t in {id(t): t for t in (*model.parameters(), *model.buffers())}.values():
        sizes[kind_of.get(id(t), "other_params")] += t.numel() * t.element_size()
    return {**sizes, "total": sum(sizes.values())}


def format_memory_report(rows: Mapping[str, Mapping[str, int]]) -> str:
    """A text table of `model_memory_bytes` results, one row per label, in MiB, with each
    total as a share of the first row's."""
    if not rows:
        raise ValueError('"rows" must hold at least one memory report')
    base = next(iter(rows.values()))["total"]
    width = max(len("model"), *(len(label) for label in rows))
    head = f"{'model':<{width}}  {'total MiB':>10}  {'quant MiB':>10}  {'scales MiB':>10}  {'other MiB':>10}  {'vs first':>8}"
    lines = [head, "-" * len(head)]
    for label, mem in rows.items():
        cells = [f"{mem[k] / _MIB:>10.2f}" for k in ("total", "quantized_weights", "scales", "other_params")]
        share = mem["total"] / base if base else float("nan")
        lines.append(f"{label:<{width}}  {'  '.join(cells)}  {share:>8.3f}")
    return "\n".join(lines)
