"""What crosses between containers: protocol values as safetensors bytes.

Every ``bytes`` value (a ``Payload.data``, a split step's gradient, ...) becomes a uint8
tensor of the safetensors file, so payload bytes travel as they are; everything else is
JSON in the file's ``__metadata__`` (key ``testbed-wire``), as a tree that keeps what JSON
alone loses: tuples stay tuples, dict keys keep their types (client ids are ints), and the
classes registered in :mod:`testbed.config.wiretypes` (the protocol's frozen dataclasses,
the runner's and workers' messages, Workload, HostCalibration, the Scenario inside a
ClientSpec, ...) are rebuilt as the same classes. Floats keep their exact value (JSON's repr
round-trips; NaN and infinities included).

A class crosses by its registered tag, never by its module path. Decoding looks the tag up
in the registry and nothing else: it never imports a module named by a message (the only
imports it makes are those of :data:`DEFINING_MODULES`, a fixed list, so that every
registration has run). Anything that is not what :func:`encode` writes (an unknown tag, a
field the class does not have, a node of the wrong shape, a blob key the file lacks, a
header that is not a JSON object, truncated data, a header length past the data, nesting
deeper than :data:`MAX_DEPTH`, a value the class's own checks refuse) is a
:class:`WireError`, and only a WireError. The file is read by the header's own offsets
(dtype ``U8``, one dimension, inside the data), so decoding needs neither numpy nor a
safetensors parser; :func:`decode_file` reads a message spooled to disk piecewise.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any, BinaryIO

from testbed.config.wiretypes import tag_of, type_of

if TYPE_CHECKING:
    import numpy as np

FORMAT = "testbed-wire/2"  # /2: classes by registered tag (/1 named module paths)
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own bound on a header
MAX_DEPTH = 100  # nodes inside nodes; the protocol's values nest a handful deep
# every module that registers a type crossing between the runner and a worker, imported (once)
# before a tag counts as unknown; types registered elsewhere (the clock's ledger, a framework's
# server-side values) are decoded only by processes that imported their modules already
DEFINING_MODULES = ("testbed.protocol", "testbed.ml.workload", "testbed.config.schema",
                    "testbed.host.calibration", "testbed.backends.messages")
_META_KEY = "testbed-wire"
_TAG = "$"  # key of every tagged node: {"$": "tuple", ...}
_SPECIAL_FLOATS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
_loaded = False


class WireError(ValueError):
    """A value that cannot be encoded, or bytes that are not a testbed wire message."""


def load_registry() -> None:
    """Import every defining module once, so that every registered tag is known."""
    global _loaded
    if not _loaded:
        for module in DEFINING_MODULES:
            import_module(module)
        _loaded = True


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
    """The value that :func:`encode` turned into ``data``; WireError for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"a wire message is bytes, not {type(data).__name__}")
    data = bytes(data)
    start, tree, blobs = _parse_header(data[:8], lambda n: data[8:8 + n], len(data))
    return _Decoder(blobs, lambda lo, hi: data[start + lo:start + hi]).node(tree, 0)


def decode_file(handle: BinaryIO) -> Any:
    """:func:`decode` of the message in the open binary file `handle` (e.g. a request body
    spooled to disk), read piece by piece: its header, then each blob where it is used."""
    try:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(0)
        prefix = handle.read(8)
    except (OSError, ValueError) as exc:
        raise WireError(f"cannot read the message: {exc}") from None

    def read_at(offset: int, n: int) -> bytes:
        try:
            handle.seek(offset)
            return handle.read(n)
        except (OSError, ValueError) as exc:
            raise WireError(f"cannot read the message: {exc}") from None

    start, tree, blobs = _parse_header(prefix, lambda n: read_at(8, n), size)
    return _Decoder(blobs, lambda lo, hi: read_at(start + lo, hi - lo)).node(tree, 0)


# --- encoding -----------------------------------------------------------------------------


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
    tag = tag_of(type(v))
    if tag is not None and dataclasses.is_dataclass(v):
        fields = {f.name: _enc(getattr(v, f.name), blobs, f"{where}.{f.name}") for f in dataclasses.fields(v)
                  if f.init}
        return {_TAG: "dataclass", "name": tag, "fields": fields}
    if tag is not None and _is_pydantic_model(v):
        return {_TAG: "model", "name": tag, "json": v.model_dump_json()}
    if dataclasses.is_dataclass(v) or _is_pydantic_model(v):
        raise WireError(f"{where}: {type(v).__module__}.{type(v).__qualname__} is not a registered wire type "
                        "(testbed.config.wiretypes: register it where it is defined)")
    raise WireError(f"{where}: cannot encode a value of type {type(v).__module__}.{type(v).__qualname__} "
                    "(supported: None, bool, int, float, str, bytes, tuple, list, dict and the registered "
                    "wire types)")


def _is_pydantic_model(v: Any) -> bool:
    """A pydantic model, told without importing pydantic (the container supervisor stays light)."""
    return any(c.__module__.startswith("pydantic") and c.__name__ == "BaseModel" for c in type(v).__mro__)


def _enc_float(x: float) -> Any:
    if x != x or x in (float("inf"), float("-inf")):
        return {_TAG: "float", "repr": repr(x)}
    return x


# --- decoding: the envelope -----------------------------------------------------------------


def _parse_header(prefix: bytes, read_header: Callable[[int], bytes],
                  size: int) -> tuple[int, Any, dict[str, tuple[int, int]]]:
    """(where the data starts, the value's JSON tree, blob key -> (start, end) in the data)."""
    if len(prefix) < 8:
        raise WireError(f"not a safetensors message: {size} bytes, shorter than its 8-byte header length")
    header_len = int.from_bytes(prefix, "little")
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise WireError(f"not a safetensors message: a header of {header_len} bytes in {size} bytes")
    try:
        header = json.loads(read_header(header_len))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WireError(f"not a safetensors message: its header is not JSON ({str(exc)[:80]})") from None
    if not isinstance(header, dict):
        raise WireError(f"not a safetensors message: its header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get(_META_KEY), str):
        found = meta.get("format") if isinstance(meta, dict) else None
        raise WireError(f"not a {FORMAT} message (format {found!r:.40})")
    data_len = size - 8 - header_len
    blobs = {key: _blob_span(key, info, data_len) for key, info in header.items()}
    try:
        tree = json.loads(meta[_META_KEY])
    except (ValueError, RecursionError) as exc:
        raise WireError(f"the message's value is not JSON ({str(exc)[:80]})") from None
    return 8 + header_len, tree, blobs


def _blob_span(key: str, info: Any, data_len: int) -> tuple[int, int]:
    """A tensor entry of the header, checked: bytes (U8, one dimension) inside the data."""
    ok = isinstance(info, dict) and info.get("dtype") == "U8" and isinstance(info.get("shape"), list) \
        and isinstance(info.get("data_offsets"), list) and len(info["shape"]) == 1 and len(info["data_offsets"]) == 2 \
        and all(type(x) is int for x in (*info["shape"], *info["data_offsets"]))
    if not ok:
        raise WireError(f"blob {key!r:.40}: not a one-dimensional U8 tensor entry")
    lo, hi = info["data_offsets"]
    if not 0 <= lo <= hi <= data_len or hi - lo != info["shape"][0]:
        raise WireError(f"blob {key!r:.40}: offsets {lo}..{hi} do not hold {info['shape'][0]} bytes "
                        f"of {data_len} bytes of data")
    return lo, hi


# --- decoding: the value ----------------------------------------------------------------------


class _Decoder:
    """Rebuilds a value from its JSON tree; `read(lo, hi)` gives the data's bytes lo..hi."""

    def __init__(self, blobs: dict[str, tuple[int, int]], read: Callable[[int, int], bytes]) -> None:
        self.blobs = blobs
        self.read = read

    def node(self, node: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"the value nests deeper than {MAX_DEPTH} levels")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.node(x, depth + 1) for x in node]
        kind = node.get(_TAG) if isinstance(node, dict) else None
        build = _KINDS.get(kind) if isinstance(kind, str) else None
        if build is None:
            raise WireError(f"unknown wire node {str(kind)!r:.60}")
        keys, method = build
        if set(node) != keys:
            raise WireError(f"a {kind} node has keys {sorted(node)!r:.80}, not {sorted(keys)}")
        return method(self, node, depth + 1)

    def _bytes(self, node: dict, depth: int) -> bytes:
        span = self.blobs.get(node["key"]) if isinstance(node["key"], str) else None
        if span is None:
            raise WireError(f"no blob {str(node['key'])!r:.40} in the message")
        data = self.read(*span)
        if len(data) != span[1] - span[0]:
            raise WireError("the message's data ends early")
        return data

    def _items(self, node: dict, depth: int) -> list:
        if not isinstance(node["items"], list):
            raise WireError(f"a {node[_TAG]} node's items are a {type(node['items']).__name__}, not a list")
        return node["items"]

    def _tuple(self, node: dict, depth: int) -> tuple:
        return tuple(self.node(x, depth) for x in self._items(node, depth))

    def _dict(self, node: dict, depth: int) -> dict:
        out = {}
        for pair in self._items(node, depth):
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireError("a dict item is not a [key, value] pair")
            key = self.node(pair[0], depth)
            try:
                out[key] = self.node(pair[1], depth)
            except TypeError:  # an unhashable key (a list)
                raise WireError(f"a dict key of type {type(key).__name__} is not hashable") from None
        return out

    def _float(self, node: dict, depth: int) -> float:
        value = _SPECIAL_FLOATS.get(node["repr"]) if isinstance(node["repr"], str) else None
        if value is None:
            raise WireError(f"a float node holds {str(node['repr'])!r:.40}, not nan, inf or -inf")
        return value

    def _dataclass(self, node: dict, depth: int) -> Any:
        cls = _registered(node["name"])
        if not dataclasses.is_dataclass(cls) or not isinstance(node["fields"], dict):
            raise WireError(f"{node['name']} is not rebuilt from fields")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(str(k) for k in node["fields"] if k not in known)
        if unknown:
            raise WireError(f"{node['name']} has no field {unknown[0]!r:.40}")
        fields = {name: self.node(x, depth) for name, x in node["fields"].items()}
        return _build(node["name"], lambda: cls(**fields))

    def _model(self, node: dict, depth: int) -> Any:
        cls = _registered(node["name"])
        if not hasattr(cls, "model_validate_json") or not isinstance(node["json"], str):
            raise WireError(f"{node['name']} is not rebuilt from JSON")
        return _build(node["name"], lambda: cls.model_validate_json(node["json"]))


_KINDS: dict[str, tuple[frozenset[str], Callable[[_Decoder, dict, int], Any]]] = {
    "bytes": (frozenset({_TAG, "key"}), _Decoder._bytes),
    "tuple": (frozenset({_TAG, "items"}), _Decoder._tuple),
    "dict": (frozenset({_TAG, "items"}), _Decoder._dict),
    "float": (frozenset({_TAG, "repr"}), _Decoder._float),
    "dataclass": (frozenset({_TAG, "name", "fields"}), _Decoder._dataclass),
    "model": (frozenset({_TAG, "name", "json"}), _Decoder._model),
}


def _registered(tag: Any) -> type:
    """The class registered as `tag`; nothing is imported by it."""
    cls = type_of(tag)
    if cls is None and isinstance(tag, str):
        load_registry()
        cls = type_of(tag)
    if cls is None:
        raise WireError(f"unknown type {str(tag)!r:.80}: not a registered wire type")
    return cls


def _build(tag: str, make: Callable[[], Any]) -> Any:
    """The registered class's value; what its own checks refuse is a WireError."""
    try:
        return make()
    except WireError:
        raise
    except Exception as exc:  # TypeError (a missing field), ValueError (pydantic, __post_init__), ...
        raise WireError(f"{tag}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") \
            from None
