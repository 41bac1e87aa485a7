"""Rows as CSV text, exactly as pandas' `to_csv` writes them (QUOTE_MINIMAL, lines ending in
"\n", floats as their repr, empty cells for None and NaN, counts as integers), formatted a
column at a time: a fleet round writes tens of thousands of rows, and most of a column's
values repeat, so each distinct value is formatted once.
"""

from __future__ import annotations

import math
import re
import struct
import threading
from array import array
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

import numpy as np

INTEGER_COLUMNS = {  # the columns that count things: written as integers (NA, not 2.0)
    "round", "client", "payload_bytes", "wire_bytes", "n_samples", "bytes_down", "bytes_up", "participants",
    "failures", "discarded", "straggler", "wire_bytes_up", "wire_bytes_down", "start_version", "staleness",
}


def cell(value: Any, integer: bool) -> Any:
    """A value as pandas writes it in the recorder's frames: empty for None/NaN, counts as integers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if integer and isinstance(value, (float, np.floating, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value


MEMO_MIN_CELLS = 64  # a float column this long formats each distinct value once, when half repeat
_QUOTED = re.compile(r'[,"\n]')  # a cell the csv module quotes (QUOTE_MINIMAL, lines ending in \n)


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if _QUOTED.search(text) else text


def _text(value: Any, integer: bool) -> str:
    """One cell as the csv module writes `cell(value)`: a float as its repr, None as empty."""
    text = cell(value, integer)
    return _quoted(text if text.__class__ is str else str(text))


def _column(values: list[Any], column: str) -> list[str]:
    """The cells of column `column` as text: a whole column of ints (or bools), floats or plain
    strings, with or without empty cells (None), at once (the common case: a fleet round writes
    tens of thousands of rows), any other column cell by cell. Python's float repr is the cost
    (~0.5 us a cell); a fleet's columns repeat most values (the device seconds of a device class,
    shared start times), so a long column formats each distinct value once, and client ids are
    looked up."""
    integer = column in INTEGER_COLUMNS
    kinds = set(map(type, values))
    empty = _NONE in kinds
    kinds.discard(_NONE)
    if kinds <= {int} or kinds == {bool}:  # not both: True == 1 would share a memo key
        if column in ID_COLUMNS and kinds and not empty and len(values) >= MEMO_MIN_CELLS:
            texts = _id_texts(values)
            if texts is not None:
                return texts
        return _formatted(values, str, empty)
    if kinds <= {float} and not integer:
        return _formatted(values, _float_text, empty)
    if kinds <= {str}:
        if len(values) >= MEMO_MIN_CELLS and values.count(values[0]) == len(values):  # one text throughout
            return [_quoted(values[0]) if values[0] is not None else ""] * len(values)
        distinct = dict.fromkeys(values)
        distinct.pop(None, None)
        if any(map(_QUOTED.search, distinct)):  # each distinct text quoted once
            quoted = {v: _quoted(v) for v in distinct}
            quoted[None] = ""
            return list(map(quoted.__getitem__, values))
        return ["" if v is None else v for v in values] if empty else values
    return [_text(v, integer) for v in values]


_NONE = type(None)
ID_COLUMNS = frozenset({"client"})  # dense ids from 0 (-1: the server's rows): their texts are kept, and looked up
ID_TEXT_MAX = 1 << 20
# str(i) for each id i from 0 up, then "-1" last, where Python's index -1 finds it: grown to the largest id written
_ID_TEXT: list[str] = ["-1"]
_ID_GROWING = threading.Lock()


def _id_texts(values: list[int]) -> list[str] | None:
    """The texts of ids (ints from -1) by lookup; None where one is below -1 or ID_TEXT_MAX or more."""
    low, high = min(values), max(values)
    if low < -1 or high >= ID_TEXT_MAX:
        return None
    if high >= len(_ID_TEXT) - 1:
        with _ID_GROWING:  # one thread grows it at a time (each entry's text follows its index)
            held = len(_ID_TEXT) - 1
            _ID_TEXT[held:] = [*map(str, range(held, high + 1)), "-1"]
    return list(map(_ID_TEXT.__getitem__, values))


def _float_text(value: float) -> str:
    """A float cell: its repr, NaN empty."""
    return "" if value != value else float.__repr__(value)


def _formatted(values: list[Any], fmt: Callable[[Any], str], empty: bool) -> list[str]:
    """`fmt` of each value (None: empty), each distinct value once where most repeat."""
    if len(values) >= MEMO_MIN_CELLS:
        first, floats = values[0], fmt is _float_text  # only a float has a zero of either sign
        if values.count(first) == len(values) and not (floats and first == 0):  # one value throughout
            return ["" if first is None else fmt(first)] * len(values)
        distinct = dict.fromkeys(values)
        if 2 * len(distinct) <= len(values) and not (floats and 0.0 in distinct and _both_zeros(values)):
            text = {v: "" if v is None else fmt(v) for v in distinct}  # 0.0 == -0.0: one key, one sign here
            return list(map(text.__getitem__, values))
    if fmt is _float_text and not empty:
        cells = list(map(float.__repr__, values))
        return ["" if c == "nan" else c for c in cells] if "nan" in cells else cells
    return [fmt(v) for v in values] if not empty else ["" if v is None else fmt(v) for v in values]


_NEGATIVE_ZERO = struct.pack("=d", -0.0)


def _both_zeros(values: list[Any]) -> bool:
    """Whether 0.0 and -0.0 both occur (a memo would write one of them with the other's sign).
    A column of floats is first searched as its doubles' bytes for a negative zero (C speed: a
    fleet's device seconds are 0.0 in every transfer row); only where one is found, or where
    empty cells (None) prevent the search, are the zeros' signs looked at one by one."""
    try:
        raw = array("d", values).tobytes()
    except TypeError:  # None (empty) cells among the floats
        raw = None
    if raw is not None:
        at = raw.find(_NEGATIVE_ZERO)
        while at % 8 and at != -1:  # a match must start on a double's boundary
            at = raw.find(_NEGATIVE_ZERO, at + 1)
        if at == -1:
            return False
    return len({math.copysign(1.0, v) for v in values if v == 0 and v is not None}) > 1


def csv_rows(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as CSV lines under `columns` (no header), as pandas `to_csv` writes them (the recorder's frames),
    formatted column by column."""
    if not rows:
        return ""
    try:  # every row has every column (the common case): a column at a time at C speed (4x zip(*rows))
        return csv_lines(rows, columns, columns)
    except KeyError:
        return csv_lines([[row.get(c) for c in columns] for row in rows], columns, range(len(columns)))


def csv_exact(rows: list[dict[str, Any]], columns: list[str]) -> str | None:
    """`csv_rows` of rows that each have exactly `columns` as keys (as many keys, none missing:
    no key checked one by one); None where a row has others or fewer."""
    if set(map(len, rows)) != {len(columns)}:
        return None
    try:
        return csv_lines(rows, columns, columns)
    except KeyError:
        return None


def csv_lines(rows: list, columns: list[str], keys: Iterable) -> str:
    """CSV lines of `rows` (dicts, or tuples in `columns`' order), each column's cells taken by
    its key in `keys` (a column name, or a position) and formatted at once."""
    cells = [_column(list(map(itemgetter(k), rows)), c) for c, k in zip(columns, keys)]
    return "\n".join(map(",".join, zip(*cells))) + "\n"
