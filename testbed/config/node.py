"""The base of every scenario node, and the error every scenario problem is reported as.

Every field of every node refuses what YAML lets through but no field means: NaN and
infinities (`rtt_ms: .inf`), booleans where a number is expected (`count: true`), integers
past the 64-bit range the run's arrays and seeds use, and text with control characters
(a NUL in a path).
"""

from __future__ import annotations

import functools
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

INT64_MAX = 2**63 - 1


class ScenarioError(ValueError):
    """Bad scenario input; the message reads ``file: field: problem`` on one line."""

    @classmethod
    def at(cls, file: object, field: str, problem: str) -> ScenarioError:
        return cls(problem_line(file, field, problem))


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def problem_line(file: object, field: str, problem: str) -> str:
    """The one line every input problem is reported as: ``file: field: problem``."""
    return f"{one_line(str(file))}: {one_line(field)}: {one_line(problem)}"


class Node(BaseModel):
    """A frozen scenario section that rejects unknown keys and non-finite numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # fields whose text may hold line breaks (a prompt template); other control characters stay refused
    multiline_fields: typing.ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        _check_plain(value, bool_ok=_accepts_bool(cls, info.field_name),
                     allowed=" \t\n" if info.field_name in cls.multiline_fields else " \t")
        return value


def _check_plain(value: Any, *, bool_ok: bool, allowed: str = " \t") -> None:
    """ValueError for a boolean where no boolean is meant, an integer past int64, or text with
    control characters; lists are looked into (mappings are nodes that check themselves)."""
    # ValueError throughout, not TypeError: pydantic reports only ValueError as a validation error
    if isinstance(value, bool):
        if not bool_ok:
            raise ValueError(f"the boolean {str(value).lower()} is not a valid value here")
    elif isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValueError(f"an integer of {value.bit_length()} bits is outside the 64-bit range")
    elif isinstance(value, str):
        if not all(c.isprintable() or c in allowed for c in value):
            raise ValueError(f"'{one_line(value)[:80]}' contains control characters")
    elif isinstance(value, (bytes, bytearray)):
        raise ValueError("binary data (!!binary) is not a valid value here")  # noqa: TRY004
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _check_plain(item, bool_ok=bool_ok, allowed=allowed)


@functools.cache
def _accepts_bool(cls: type[BaseModel], field: str) -> bool:
    """Whether the field's type admits a boolean anywhere (a flag, or a union with one)."""
    info = cls.model_fields.get(field)
    if info is None:
        return True
    todo = [info.annotation]
    while todo:
        annotation = todo.pop()
        if annotation is bool:
            return True
        todo.extend(typing.get_args(annotation))
    return False
