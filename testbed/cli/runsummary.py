"""``testbed run --json``: a run folder as one JSON document for scripts.

The document is the folder's ``summary.json`` (status, framework, final metrics, times, ...)
with ``run_dir`` (the folder) and ``rounds`` (the rows of ``rounds.csv``, one object per
round, an empty cell null). It is strict JSON: NaN and infinities are null.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


def summary_document(run_dir: Path) -> str | None:
    """The document of ``run_dir``; None when it holds no summary.json."""
    from testbed.results.runfolder import read_summary

    summary = read_summary(run_dir)
    if summary is None:
        return None
    document = {**summary, "run_dir": str(run_dir), "rounds": read_rounds(run_dir / "rounds.csv")}
    return json.dumps(_strict(document), allow_nan=False)


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """rounds.csv's rows, numbers as numbers, an empty cell None; [] when there is no file."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [{key: _cell(value) for key, value in row.items()} for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _cell(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _strict(value: Any) -> Any:
    """NaN and infinities -> None, all the way down."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value
