"""Hypothesis strategies for what reaches testbed.backends.wire.decode and the endpoint:
arbitrary bytes, valid safetensors envelopes around arbitrary JSON trees (mostly shaped like
the codec's nodes, naming registered tags, project functions and modules), encodings of real
messages with bytes flipped, and raw HTTP requests. Shared by test_wire_fuzz.py and
test_endpoint_fuzz.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from contextlib import contextmanager
from collections.abc import Iterator

from hypothesis import strategies as st

from testbed.backends import wire
from testbed.backends.messages import Call, Died, Done, Raised, Ready, Started
from testbed.config import wiretypes
from testbed.ml.workload import Workload
from testbed.protocol import ComputeSpan, FitIns, FitRes, Payload, StepRes

wire.load_registry()
TAGS = sorted(wiretypes.registered())
FIELDS = sorted({f.name for cls in wiretypes.registered().values() if dataclasses.is_dataclass(cls)
                 for f in dataclasses.fields(cls)})
HOSTILE_NAMES = ["testbed.backends.http_worker:subprocess.run", "testbed.ml.assets:subprocess.Popen",
                 "testbed.cli.main:os.system", "subprocess:run", "os:system", "builtins:eval", "__import__",
                 "testbed.protocol:Payload", "Payload.__init__", "FitRes.__class__", "", "$", "\x00"]
KINDS = ["bytes", "tuple", "dict", "float", "dataclass", "model", "message", "class", "set", ""]
NODE_KEYS = ["$", "key", "items", "repr", "name", "fields", "json", "class"]

SPAN = ComputeSpan("train", 0.5, Workload(flops=1e9, bytes_moved=1e6))
MESSAGES = [
    Started(7), Ready(setup_s=1.0, rss_bytes=10, pid=3, limits={"cpus": [0]}), Raised("ValueError: x", 0.1, 5),
    Died(-9, 1 << 20, 1),
    Done(FitRes(1, 2, (Payload("adapter_up", bytes(range(64))),), 10, {"train_loss": 1.5}, (SPAN,), 99)),
    Done(StepRes(payloads=(Payload("activations_up", b"\x01" * 40), Payload("x", b"")), spans=(SPAN,))),
    Call(0, "fit", (FitIns(1, (Payload("adapter_down", b"\xff" * 17),), seed=3, config={"lr": 0.1, 1: (2, None)}),)),
]
ENCODED = [wire.encode(m) for m in MESSAGES]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                    st.text(max_size=12), st.sampled_from(TAGS + HOSTILE_NAMES + ["nan", "inf", "-inf", "b0"]))


def _node(children: st.SearchStrategy) -> st.SearchStrategy:
    """A dict shaped like one of the codec's nodes, its parts right, wrong or missing."""
    return st.fixed_dictionaries(
        {"$": st.sampled_from(KINDS) | st.text(max_size=6)},
        optional={
            "key": st.sampled_from(["b0", "b1", "b9"]) | children,
            "items": st.lists(children | st.lists(children, min_size=2, max_size=2), max_size=4) | children,
            "repr": st.sampled_from(["nan", "inf", "-inf", "1e999", "1.5"]) | children,
            "name": st.sampled_from(TAGS + HOSTILE_NAMES) | st.text(max_size=10),
            "class": st.sampled_from(HOSTILE_NAMES),
            "fields": st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), children, max_size=5)
            | children,
            "json": st.sampled_from(["{}", "[]", '{"name": 1}', "null", "{"]) | st.text(max_size=20),
        })


trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(NODE_KEYS) | st.text(max_size=5), children, max_size=4),
        _node(children), _node(children),
    ),
    max_leaves=25,
)

tensor_entries = st.fixed_dictionaries(
    {}, optional={"dtype": st.sampled_from(["U8", "F32", "I64", "u8", ""]) | scalars,
                  "shape": st.lists(st.integers(-2, 300), max_size=3) | scalars,
                  "data_offsets": st.lists(st.integers(-5, 400), max_size=3) | scalars})


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A safetensors file: an 8-byte header length, a JSON header holding the wire metadata
    (its tree arbitrary) and tensor entries (valid U8 blobs or not), then data."""
    data = draw(st.binary(max_size=300))
    header: dict = {}
    for i in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            lo = draw(st.integers(0, len(data)))
            hi = draw(st.integers(lo, len(data)))
            header[f"b{i}"] = {"dtype": "U8", "shape": [hi - lo], "data_offsets": [lo, hi]}
        else:
            header[draw(st.sampled_from([f"b{i}", "", "__metadata__x"]) | st.text(max_size=4))] = draw(tensor_entries)
    meta = {"format": draw(st.sampled_from([wire.FORMAT] * 8 + ["testbed-wire/1", ""])),
            "testbed-wire": json.dumps(draw(trees), allow_nan=True)}
    if draw(st.integers(0, 19)) == 0:
        meta = draw(st.sampled_from([None, [], "x", {"format": wire.FORMAT}, {"format": wire.FORMAT, "testbed-wire": 5}]))
    header["__metadata__"] = meta
    text = json.dumps(header, allow_nan=True).encode()
    text += b" " * draw(st.integers(0, 7))
    length = draw(st.sampled_from([len(text)] * 24 + [0, len(text) - 1, len(text) + 1, 2**63, 2**64 - 1, 10**9]))
    return length.to_bytes(8, "little") + text + data


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A real message's encoding with a few bytes flipped, cut out or inserted, or cut short."""
    data = bytearray(draw(st.sampled_from(ENCODED)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[i]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[i:]
        if not data:
            break
    return bytes(data)


wire_inputs = st.one_of(st.binary(max_size=400), envelopes(), mutated_messages())

RUNNERS = {subprocess: ("run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"),
           os: ("system", "popen", "execv", "execve", "execvp", "spawnv", "posix_spawn", "fork", "kill")}


@contextmanager
def recording_runners() -> Iterator[list[str]]:
    """subprocess's and os's program-running callables replaced by a recorder meanwhile."""
    calls: list[str] = []
    saved = [(m, n, getattr(m, n)) for m, names in RUNNERS.items() for n in names if hasattr(m, n)]
    for module, name, _ in saved:
        setattr(module, name, lambda *a, _n=f"{module.__name__}.{name}", **k: calls.append(_n))
    try:
        yield calls
    finally:
        for module, name, real in saved:
            setattr(module, name, real)


# --- HTTP requests ------------------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "get", "G ET", ""]
ROUTES = ["/health", "/clients/0/spec", "/clients/0/next", "/clients/0/ready", "/clients/0/result", "/clients/1/next",
          "/clients/00/spec", "/clients/-1/spec", "/clients/0", "/", "*", "//x", "/clients/0/next/", "/%00"]
PARAMS = ["inc=1", "inc=0", "inc=x", "inc=-1", "wait_s=0", "wait_s=0.01", "wait_s=nan", "wait_s=inf", "wait_s=-1",
          "wait_s=1e308", "wait_s=99999999", "foo=1", "inc", "=", "&", "inc=%ff", "wait_s=%6E%61%6E", "inc=\u0661"]
GOOD_ROUTES = [("GET", "/health"), ("GET", "/clients/0/spec"), ("GET", "/clients/0/next"),
               ("POST", "/clients/0/ready"), ("POST", "/clients/0/result"), ("POST", "/clients/0/result")]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "http/1.1", ""]
HEADER_NAMES = ["Content-Length", "Transfer-Encoding", "Expect", "Connection", "Authorization", "Host", "X-Y", ""]


def _mostly(draw: st.DrawFn, usual: st.SearchStrategy, odd: st.SearchStrategy, odds: int = 4):
    """`usual`, but one time in `odds` + 1 `odd` instead."""
    return draw(odd) if draw(st.integers(0, odds)) == 0 else draw(usual)


@st.composite
def http_requests(draw: st.DrawFn, token: str) -> bytes:
    """A request whose every part is mostly right and sometimes wrong or odd: method, target,
    query, version, headers (the token, Content-Length true, false, repeated or absent), body."""
    method, target = _mostly(draw, st.sampled_from(GOOD_ROUTES),
                             st.tuples(st.sampled_from(METHODS) | st.text(max_size=6),
                                       st.sampled_from(ROUTES) | st.text(max_size=20)))
    if draw(st.booleans()):
        params = _mostly(draw, st.lists(st.sampled_from(PARAMS[:2] + PARAMS[4:6]), max_size=2),
                         st.lists(st.sampled_from(PARAMS) | st.text(max_size=8), max_size=3))
        target += "?" + "&".join(params)
    version = _mostly(draw, st.just("HTTP/1.1"), st.sampled_from(VERSIONS))
    line = _mostly(draw, st.just(f"{method} {target} {version}"), st.text(max_size=30), odds=20)
    body = b""
    if method == "POST" or draw(st.integers(0, 9)) == 0:
        body = _mostly(draw, st.sampled_from(ENCODED), wire_inputs | st.binary(max_size=64)
                       | st.sampled_from([b"\x00" * 5000, ENCODED[-1] * 2]), odds=2)
    headers = []
    auth = _mostly(draw, st.just(f"Bearer {token}"),
                   st.sampled_from([f"Bearer {token[:-1]}", "Bearer", "", "Basic x"]) | st.text(max_size=10), odds=6)
    if auth:
        headers.append(f"Authorization: {auth}")
    length = _mostly(draw, st.just(str(len(body))),
                     st.sampled_from(["", "-1", "abc", "0", str(len(body) + 5), "1" * 30, f"{len(body)}, {len(body)}",
                                      "4097", " 3 "]))
    if length:
        headers.append(f"Content-Length: {length}")
    for _ in range(_mostly(draw, st.just(0), st.integers(1, 3))):
        name = draw(st.sampled_from(HEADER_NAMES) | st.text(max_size=8))
        headers.append(f"{name}: {draw(st.sampled_from(['chunked', '100-continue', 'close', '5', '']) | st.text(max_size=10))}")
    head = (line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 19)) == 0:  # a head cut short
        head = head[: draw(st.integers(0, len(head)))]
    return head + body
