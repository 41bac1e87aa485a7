"""dict_init: the cheaper __init__ of the per-client-round messages behaves as the dataclass's own."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from testbed.backends import wire
from testbed.config.dictinit import dict_init
from testbed.protocol import FitIns, FitRes, Payload


@dataclasses.dataclass(frozen=True)
class _Reference:
    a: int
    b: tuple
    c: str = "x"
    d: dict = dataclasses.field(default_factory=dict)


@dict_init
@dataclasses.dataclass(frozen=True)
class _Fast:
    a: int
    b: tuple
    c: str = "x"
    d: dict = dataclasses.field(default_factory=dict)


@pytest.mark.parametrize("args, kwargs", [((1, ()), {}), ((1, (2,), "y"), {}), ((), {"b": (3,), "a": 4, "d": {"k": 1}}),
                                          ((5,), {"b": (), "c": "z"})])
def test_same_fields_defaults_and_factories_as_the_dataclass_init(args, kwargs):
    fast, ref = _Fast(*args, **kwargs), _Reference(*args, **kwargs)
    assert dataclasses.asdict(fast) == dataclasses.asdict(ref)
    assert list(vars(fast)) == [f.name for f in dataclasses.fields(_Fast)]  # every field, in order
    assert _Fast(*args, **kwargs) == fast
    assert hash(dataclasses.replace(fast, d=None)) == hash(_Fast(fast.a, fast.b, fast.c, None))
    assert _Fast(1, ()).d is not _Fast(1, ()).d  # a fresh default per instance
    assert str(inspect.signature(_Fast)) == str(inspect.signature(_Reference)) == \
        "(a: 'int', b: 'tuple', c: 'str' = 'x', d: 'dict' = <factory>) -> None"


def test_still_frozen_and_bad_calls_refused_as_before():
    fast = _Fast(1, ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.a = 2
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'b'"):
        _Fast(1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'e'"):
        _Fast(1, (), e=3)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        _Fast(1, (), a=2)


@pytest.mark.parametrize("make", [
    lambda: dataclasses.dataclass(type("Plain", (), {"__annotations__": {"a": int}})),  # not frozen
    lambda: dataclasses.dataclass(frozen=True, slots=True)(type("Slotted", (), {"__annotations__": {"a": int}})),
    lambda: dataclasses.dataclass(frozen=True)(type("Posted", (), {"__annotations__": {"a": int},
                                                                   "__post_init__": lambda self: None})),
    lambda: dataclasses.dataclass(frozen=True, kw_only=True)(type("KwOnly", (), {"__annotations__": {"a": int}})),
    lambda: type("NotADataclass", (), {}),
])
def test_a_class_it_does_not_fit_is_refused(make):
    with pytest.raises(TypeError, match="dict_init"):
        dict_init(make())


def test_the_messages_cross_the_wire_and_compare_as_before():
    ins = FitIns(3, (Payload("adapter_down", b"abc"),), seed=7)
    res = FitRes(2, 3, (), n_samples=5, metrics={"train_loss": 1.5}, spans=(), host="n1")
    assert (ins.config, res.peak_rss_bytes) == ({}, 0)
    assert wire.decode(wire.encode(ins)) == ins and wire.decode(wire.encode(res)) == res
    assert dataclasses.replace(res, client_id=4).client_id == 4 and res.client_id == 2
