"""Fuzzing testbed.backends.wire.decode: whatever bytes come in, the answer is a value or a
WireError, never another exception, and nothing runs (hypothesis profiles: tests/conftest.py;
TESTBED_FUZZ=long for many more examples)."""

from __future__ import annotations

import math
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from wire_trees import MESSAGES, envelopes, mutated_messages, recording_runners, trees, wire_inputs

from testbed.backends.wire import WireError, decode, decode_file, encode

COUNTS: dict[str, int] = {}


def _decode_or_wire_error(data: bytes) -> str:
    try:
        decode(data)
        return "value"
    except WireError:
        return "WireError"


def _run(name: str, strategy: st.SearchStrategy) -> dict[str, int]:
    """Every example of `strategy` decodes to a value or a WireError, with nothing run."""
    outcomes = {"value": 0, "WireError": 0}

    @given(strategy)
    def check(data: bytes) -> None:
        outcomes[_decode_or_wire_error(data)] += 1

    t0 = time.perf_counter()
    with recording_runners() as calls:
        check()
    assert calls == []
    COUNTS[name] = sum(outcomes.values())
    print(f"\n{name}: {outcomes} in {time.perf_counter() - t0:.1f} s")
    assert sum(outcomes.values()) >= settings().max_examples // 2
    return outcomes


def test_arbitrary_bytes_decode_to_a_value_or_a_wire_error():
    outcomes = _run("bytes", st.binary(max_size=600))
    assert outcomes["WireError"] > 0


def test_arbitrary_json_trees_in_a_valid_envelope_decode_to_a_value_or_a_wire_error():
    outcomes = _run("envelopes", envelopes())
    assert outcomes["WireError"] > 0 and outcomes["value"] > 0  # the shapes reach past the envelope


def test_real_messages_with_bytes_flipped_decode_to_a_value_or_a_wire_error():
    _run("mutated", mutated_messages())


@given(wire_inputs)
def test_a_message_spooled_to_a_file_decodes_as_it_does_from_memory(data):
    import tempfile

    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        try:
            from_file = ("value", decode_file(handle))
        except WireError:
            from_file = ("WireError", None)
    try:
        from_memory = ("value", decode(data))
    except WireError:
        from_memory = ("WireError", None)
    assert from_file[0] == from_memory[0]
    if from_file[0] == "value":
        assert repr(from_file[1]) == repr(from_memory[1])  # repr: NaN is not equal to itself


def test_a_tree_nested_past_the_limit_or_json_s_recursion_is_a_wire_error():
    import json

    from testbed.backends.wire import FORMAT, MAX_DEPTH

    for depth in (MAX_DEPTH + 5, 5000, 200_000):
        tree = "[" * depth + "]" * depth
        meta = json.dumps({"__metadata__": {"format": FORMAT, "testbed-wire": tree}}).encode()
        try:
            decode(len(meta).to_bytes(8, "little") + meta)
            raise AssertionError(f"depth {depth} decoded")
        except WireError:
            pass


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False) | st.text(max_size=10)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.tuples(children, children)
    | st.dictionaries(st.integers(-5, 5) | st.text(max_size=4) | st.tuples(st.integers(0, 3)), children, max_size=3),
    max_leaves=15,
)


@given(plain | st.sampled_from(MESSAGES))
def test_what_is_encoded_comes_back_exactly(value):
    back = decode(encode(value))
    assert back == value and type(back) is type(value)


@given(st.floats())
def test_every_float_keeps_its_exact_value(x):
    back = decode(encode(x))
    assert (math.isnan(back) and math.isnan(x)) or (back == x and math.copysign(1, back) == math.copysign(1, x))


def test_trees_cover_the_codecs_node_kinds():
    """The tree strategy reaches every kind of node, registered tags and hostile names (else the
    fuzzing above would stop at the envelope)."""
    seen: set[str] = set()

    @given(trees)
    def collect(tree) -> None:
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                seen.add(str(node.get("$")))
                if node.get("name") in ("FitRes", "Payload", "testbed.cli.main:os.system"):
                    seen.add(node["name"])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    collect()
    assert {"bytes", "tuple", "dict", "float", "dataclass", "model"} <= seen
