"""The types that may cross between processes and containers, each under a stable tag.

A value that crosses the docker backend's endpoint (testbed.backends.wire) is rebuilt only as
a class registered here, found by its tag: decoding never imports anything, least of all by
a name read from a message. A class is registered where it is defined, next to its
``class`` line::

    @wire_type("FitRes")
    @dataclass(frozen=True)
    class FitRes: ...

A tag is a short stable name (the class's own name, by convention), never a module path:
moving a class to another module changes no message. A tag names one class and a class has
one tag; registering either twice is an error (a module loaded again re-registers the class
of the same module and name in place).

Where this module sits: in ``testbed.config``, the lowest layer of ``testbed``, and it
imports nothing, so every layer that defines a crossing type (config's Scenario, ml's
Workload, the protocol's dataclasses, host's HostCalibration, the backends' messages) may
import it without breaking a contract of pyproject.toml. ``network`` and
``device_profiles`` may not import it (the one imports nothing of the project, the other only
its own schema), and they need not: none of their types crosses on its own; their values
travel inside the Scenario, which pydantic rebuilds from its JSON. Should one ever have to
cross by itself, it is registered from the config module that already imports it, with
``register_wire_type(TheClass, "Tag")``, rather than by opening those packages' contracts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)

_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_BY_TAG: dict[str, type] = {}
_BY_CLASS: dict[type, str] = {}


def register_wire_type(cls: type, tag: str) -> None:
    """Let `cls` cross the wire as `tag`; ValueError for a malformed or taken tag, or a class
    already registered under another tag."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise ValueError(f"{tag!r} is not a valid tag: a letter, then up to 63 letters, digits or _")
    held = _BY_TAG.get(tag)
    if held is not None and held is not cls:
        if (held.__module__, held.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"tag {tag!r} is already registered for {held.__module__}.{held.__qualname__}")
        del _BY_CLASS[held]  # the same class from a module loaded again
    if _BY_CLASS.get(cls, tag) != tag:
        raise ValueError(f"{cls.__module__}.{cls.__qualname__} is already registered as {_BY_CLASS[cls]!r}")
    _BY_TAG[tag] = cls
    _BY_CLASS[cls] = tag


def wire_type(tag: str) -> Callable[[T], T]:
    """Class decorator: ``register_wire_type(cls, tag)``."""

    def register(cls: T) -> T:
        register_wire_type(cls, tag)
        return cls

    return register


def tag_of(cls: type) -> str | None:
    """The tag `cls` crosses as (exactly this class, not a subclass); None if it may not."""
    return _BY_CLASS.get(cls)


def type_of(tag: object) -> type | None:
    """The class registered as `tag`; None for anything else (any value is safe to ask)."""
    return _BY_TAG.get(tag) if isinstance(tag, str) else None


def registered() -> dict[str, type]:
    """Every tag and its class, as registered so far in this process."""
    return dict(_BY_TAG)


def _unregister(tag: str) -> None:
    """Tests only: forget a tag registered by a test."""
    cls = _BY_TAG.pop(tag, None)
    if cls is not None:
        _BY_CLASS.pop(cls, None)
