"""What crosses between containers: protocol values as safetensors bytes.

Every ``bytes`` value (a ``Payload.data``, a split step's gradient, ...) becomes a uint8
tensor of the safetensors file, so payload bytes travel as they are; everything else is
JSON in the file's ``__metadata__`` (key ``testbed-wire``), as a tree that keeps what JSON
alone loses: tuples stay tuples, dict keys keep their types (client ids are ints), frozen
dataclasses of the testbed (FitIns, FitRes, StepRes, Failure, Payload, ComputeSpan,
Workload, ClientSpec, HostCalibration, ...) and pydantic models (the Scenario inside a
ClientSpec) are rebuilt as the same classes. Floats keep their exact value (JSON's repr
round-trips; NaN and infinities included).

The messages between the runner and a worker (:mod:`testbed.backends.messages`) are
registered here by name: a message node names one of :data:`MESSAGE_TYPES`, looked up in
that table (never imported by the name it carries); any other name is refused.

Only classes from the project's own packages are rebuilt (``testbed``, ``frameworks``,
``network``, ``device_profiles``); any other type is refused with a :class:`WireError`
naming where in the value it sits.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import import_module
from typing import TYPE_CHECKING, Any

from testbed.backends.messages import MESSAGE_TYPES

if TYPE_CHECKING:
    import numpy as np

FORMAT = "testbed-wire/1"
_META_KEY = "testbed-wire"
_ALLOWED_PACKAGES = ("testbed", "frameworks", "network", "device_profiles")
_TAG = "$"  # key of every tagged node: {"$": "tuple", ...}
_MESSAGES: dict[str, type] = {cls.__name__: cls for cls in MESSAGE_TYPES}  # the registered message classes


class WireError(ValueError):
    """A value that cannot be encoded, or bytes that are not a testbed wire message."""


def encode(value: Any) -> bytes:
    """``value`` as the bytes of one safetensors file."""
    blobs: dict[str, np.ndarray] = {}
    tree = _enc(value, blobs, "value")
    meta = {"format": FORMAT, _META_KEY: json.dumps(tree, allow_nan=True, separators=(",", ":"))}
    if not blobs:  # a safetensors file of no tensors: its header alone (no numpy needed)
        header = json.dumps({"__metadata__": meta}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)  # safetensors pads the header to 8 bytes
        return len(header).to_bytes(8, "little") + header
    from safetensors.numpy import save

    return save(blobs, metadata=meta)


def decode(data: bytes) -> Any:
    """The value that :func:`encode` turned into ``data``."""
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = header.get("__metadata__") or {}
    except (ValueError, TypeError) as exc:
        raise WireError(f"not a safetensors message: {exc}") from None
    if meta.get("format") != FORMAT or _META_KEY not in meta:
        raise WireError(f"not a {FORMAT} message (format {meta.get('format')!r})")
    blobs: dict = {}
    if len(header) > 1:  # tensors besides the metadata
        from safetensors.numpy import load

        blobs = load(data)
    return _dec(json.loads(meta[_META_KEY]), blobs)


# --- encoding -----------------------------------------------------------------------------


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _enc(v: Any, blobs: dict[str, np.ndarray], where: str) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return _enc_float(float(v))
    if isinstance(v, (bytes, bytearray, memoryview)):
        import numpy as np

        key = f"b{len(blobs)}"
        blobs[key] = np.frombuffer(bytes(v), dtype=np.uint8).copy()
        return {_TAG: "bytes", "key": key}
    if isinstance(v, tuple):
        return {_TAG: "tuple", "items": [_enc(x, blobs, f"{where}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, list):
        return [_enc(x, blobs, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        return {_TAG: "dict", "items": [[_enc(k, blobs, f"{where}.key"), _enc(x, blobs, f"{where}[{k!r}]")]
                                        for k, x in v.items()]}
    if _MESSAGES.get(type(v).__name__) is type(v):
        return {_TAG: "message", "name": type(v).__name__, "fields": _enc_fields(v, blobs, where)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        _check_allowed(type(v), where)
        return {_TAG: "dataclass", "class": _class_path(type(v)), "fields": _enc_fields(v, blobs, where)}
    if _is_pydantic_model(v):
        _check_allowed(type(v), where)
        return {_TAG: "model", "class": _class_path(type(v)), "json": v.model_dump_json()}
    raise WireError(f"{where}: cannot encode a value of type {type(v).__module__}.{type(v).__qualname__} "
                    "(supported: None, bool, int, float, str, bytes, tuple, list, dict, the project's "
                    "dataclasses and pydantic models)")


def _enc_fields(v: Any, blobs: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    """A dataclass's init fields, each encoded."""
    return {f.name: _enc(getattr(v, f.name), blobs, f"{where}.{f.name}") for f in dataclasses.fields(v) if f.init}


def _is_pydantic_model(v: Any) -> bool:
    """A pydantic model, told without importing pydantic (the container supervisor stays light)."""
    return any(c.__module__.startswith("pydantic") and c.__name__ == "BaseModel" for c in type(v).__mro__)


def _enc_float(x: float) -> Any:
    if x != x or x in (float("inf"), float("-inf")):
        return {_TAG: "float", "repr": repr(x)}
    return x


def _check_allowed(cls: type, where: str) -> None:
    if cls.__module__.split(".")[0] not in _ALLOWED_PACKAGES:
        raise WireError(f"{where}: class {_class_path(cls)} is not one of the project's "
                        f"({', '.join(_ALLOWED_PACKAGES)}); it cannot cross the wire")


# --- decoding -----------------------------------------------------------------------------


def _load_class(path: str) -> type:
    module, _, qualname = path.partition(":")
    if module.split(".")[0] not in _ALLOWED_PACKAGES:
        raise WireError(f"refusing to rebuild class {path}: not one of the project's")
    obj: Any = import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _message_class(name: Any) -> type:
    """The registered message class called `name`; nothing is imported by it."""
    cls = _MESSAGES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise WireError(f"unknown message {name!r:.80}: not one of testbed.backends.messages.MESSAGE_TYPES")
    return cls


def _dec(node: Any, blobs: dict[str, np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_dec(x, blobs) for x in node]
    if not isinstance(node, dict):
        return node
    tag = node.get(_TAG)
    if tag == "bytes":
        return blobs[node["key"]].tobytes()
    if tag == "tuple":
        return tuple(_dec(x, blobs) for x in node["items"])
    if tag == "dict":
        return {_dec(k, blobs): _dec(x, blobs) for k, x in node["items"]}
    if tag == "float":
        return float(node["repr"])
    if tag == "message":
        return _message_class(node["name"])(**{name: _dec(x, blobs) for name, x in node["fields"].items()})
    if tag == "dataclass":
        cls = _load_class(node["class"])
        return cls(**{name: _dec(x, blobs) for name, x in node["fields"].items()})
    if tag == "model":
        return _load_class(node["class"]).model_validate_json(node["json"])
    raise WireError(f"unknown wire node {node!r:.80}")
