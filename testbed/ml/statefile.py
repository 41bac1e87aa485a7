"""Model, optimizer and RNG state as safetensors files: tensors by name, plain facts as JSON in
the file's metadata. Nothing is pickled, so a state file read back can only hold numbers.

An optimizer's ``state_dict()`` is split into its tensors (``<prefix>.<param index>.<key>``)
and the rest (param groups, Python numbers) as JSON; :func:`load_optimizer` puts it back
together for ``optimizer.load_state_dict``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

_META_KEY = "testbed-state"


class StateFileError(ValueError):
    """A state file that is missing, truncated or not one of ours."""


def save_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` and `meta` to `path` (via a temp file and a rename: never half-written)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(clean, str(tmp), metadata={_META_KEY: json.dumps(meta, allow_nan=True)})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and facts save_state wrote to `path`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta_text = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except Exception as exc:  # noqa: BLE001 - OSError, or safetensors' own SafetensorError
        raise StateFileError(f"{path}: not a readable state file ({exc})") from None
    if meta_text is None:
        raise StateFileError(f"{path}: no {_META_KEY} metadata: not a testbed state file")
    return tensors, json.loads(meta_text)


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as (tensors named `<prefix>.<index>.<key>`, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in sd["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                   prefix: str) -> None:
    """Load what optimizer_tensors() returned into `optimizer` (built over the same parameters)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        idx, key = name[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """`tensors` renamed `<prefix>.<name>`."""
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named `<prefix>.<name>`, as `<name>`, in sorted order."""
    start = prefix + "."
    return {k[len(start):]: tensors[k] for k in sorted(tensors) if k.startswith(start)}

