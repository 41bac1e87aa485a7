"""`framework.kd.student_layers`: which of the server model's decoder blocks a KD student keeps
(frameworks/kd/student.py builds it). Parsed here so that the scenario checks its syntax."""

from __future__ import annotations

import re

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def student_layers(spec: str, n_layers: int) -> tuple[int, ...]:
    """The kept block indices (sorted, unique) for a `student_layers` spec; ValueError names
    what was expected."""
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind in ("first", "every"):
        if not arg.isdigit() or int(arg) < 1:
            raise ValueError(f"'{spec}': expected {kind}:N with N >= 1")
        n = int(arg)
        if kind == "first":
            if n > n_layers:
                raise ValueError(f"'{spec}': the model has {n_layers} blocks")
            return tuple(range(n))
        return tuple(sorted({*range(n_layers - 1, -1, -n)}))  # ends with the last block
    kept: set[int] = set()
    for part in spec.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise ValueError(f"'{spec}': expected first:N, every:N or a list like 0-7,28,29; bad part '{part}'")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo or hi >= n_layers:
            raise ValueError(f"'{spec}': block range {part.strip()} outside 0..{n_layers - 1}")
        kept.update(range(lo, hi + 1))
    return tuple(sorted(kept))
