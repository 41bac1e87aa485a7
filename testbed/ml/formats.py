"""Reading a data file into its examples' fields, by task kind: CSV/TSV (a header row), JSON
lines (.jsonl, .ndjson, or a .json of one object per line), a JSON array of objects, Parquet.

The columns each kind reads (dataset.columns names others):

- classification: a text and a label column (dataset.text and dataset.label).
- instruction, recognised in this order: a chat list ``messages`` of {role, content} objects
  (roles system, user, assistant) ending with the assistant's response; Alpaca's ``instruction``
  (+ ``input``, appended to the prompt) and ``output``; ``prompt`` and ``response``.
- language_modeling: a text column.

Any kind may name a group column (dataset.columns.group). Nothing read is evaluated: JSON is
parsed by json.loads (a chat list in a CSV cell too), CSV by pandas, Parquet by pyarrow. A
problem is a DataError of one line naming the file, the row (line, item) or the columns, and
what was expected.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testbed.config.dataset import ColumnsConfig
from testbed.config.files import FileProblem, read_bytes

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet")
TASK_KINDS = ("classification", "instruction", "language_modeling")
ROLES = ("system", "user", "assistant")
_CHAT = "a JSON list of {role, content} objects"
_INSTRUCTION_COLUMNS = ("a chat list 'messages', Alpaca's 'instruction' (+ 'input') and 'output', or 'prompt' and "
                        "'response' (dataset.columns names others)")


class DataError(ValueError):
    """Data that cannot be loaded, split or partitioned as asked; says where and why."""


@dataclass(frozen=True)
class Row:
    """One example's fields as read (testbed.ml.data makes it an Example)."""

    text: str  # classification, language_modeling: the text; instruction: the prompt (the last user turn)
    label: str = ""  # classification: the label; instruction: the reference response
    group: str | None = None
    turns: tuple[tuple[str, str], ...] = ()  # (role, content) of a chat prompt, ending with a user turn


@dataclass(frozen=True)
class Fields:
    """The columns of a file that one task kind reads."""

    kind: str
    text: str | None = None  # classification, language_modeling: the text; instruction: the prompt
    label: str | None = None  # classification: the label; instruction: the response
    input: str | None = None  # instruction (Alpaca): a context appended to the prompt
    messages: str | None = None  # instruction: a chat list
    group: str | None = None

    @property
    def columns(self) -> list[str]:
        named = (self.text, self.label, self.input, self.messages, self.group)
        return list(dict.fromkeys(c for c in named if c is not None))


# ---------------------------------------------------------------------------------------------
# The columns of a kind


def _shown(found: Sequence[str]) -> str:
    return repr(list(found)) if len(found) <= 20 else f"{list(found)[:20]!r} and {len(found) - 20} more"


def _require(where: str, found: Sequence[str], role: str, column: str, note: str = "") -> None:
    if column not in found:
        raise DataError(f"{where}: missing {role} column {column!r}{note}; columns found: {_shown(found)}")


def resolve_fields(kind: str, found: Sequence[str], where: str, columns: ColumnsConfig, *, text: str = "text",
                   label: str = "label") -> Fields:
    """The columns `kind` reads among those `found` (`where`: the header, or a JSON record)."""
    if kind == "classification":
        fields = Fields(kind, text=columns.text or text, label=columns.label or label)
        _require(where, found, "text", fields.text or "")
        _require(where, found, "label", fields.label or "")
    elif kind == "language_modeling":
        fields = Fields(kind, text=columns.text or text)
        _require(where, found, "text", fields.text or "",
                 " (task.kind language_modeling reads one text column; dataset.columns.text names another)")
    elif kind == "instruction":
        fields = _instruction_fields(where, found, columns)
    else:
        raise DataError(f"{where}: unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
    if columns.group is not None:
        _require(where, found, "group", columns.group, " (dataset.columns.group)")
        fields = replace(fields, group=columns.group)
    return fields


def _instruction_fields(where: str, found: Sequence[str], columns: ColumnsConfig) -> Fields:
    if columns.messages or (not (columns.prompt or columns.response) and "messages" in found):
        name = columns.messages or "messages"
        _require(where, found, "messages", name, " (dataset.columns.messages)")
        return Fields("instruction", messages=name)
    prompt = columns.prompt or next((c for c in ("instruction", "prompt") if c in found), None)
    responses = ("output", "response") if prompt == "instruction" else ("response", "output")
    response = columns.response or next((c for c in responses if c in found), None)
    if prompt is None and response is None:
        raise DataError(f"{where}: no columns task.kind instruction reads: it reads {_INSTRUCTION_COLUMNS}; "
                        f"columns found: {_shown(found)}")
    if prompt is None or response is None:
        role, names = ("prompt", "'instruction' or 'prompt'") if prompt is None else ("response", "'output' or 'response'")
        raise DataError(f"{where}: missing {role} column {names} (dataset.columns.{role} names another); "
                        f"columns found: {_shown(found)}")
    _require(where, found, "prompt", prompt, " (dataset.columns.prompt)")
    _require(where, found, "response", response, " (dataset.columns.response)")
    if columns.input:
        _require(where, found, "input", columns.input, " (dataset.columns.input)")
    context = columns.input or ("input" if "input" in found and prompt != "input" else None)
    return Fields("instruction", text=prompt, label=response, input=context)


# ---------------------------------------------------------------------------------------------
# The values of a row


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _string(where: str, row: dict[str, Any], column: str, role: str) -> str:
    """A non-blank string cell."""
    value = row[column]
    if _is_blank(value):
        raise DataError(f"{where}: empty {role} in column {column!r}")
    if not isinstance(value, str):
        raise DataError(f"{where}: {role} in column {column!r} must be a string, got {type(value).__name__}")
    return value


def _name(where: str, row: dict[str, Any], column: str, role: str) -> str:
    """A label or group: a non-blank string or number, as a string."""
    value = row[column]
    if _is_blank(value):
        raise DataError(f"{where}: empty {role} in column {column!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: {role} in column {column!r} must be a string or a number, got {type(value).__name__}")
    return str(value)


def _classified(where: str, row: dict[str, Any], text: str, label: str) -> Row:
    for role, column in (("text", text), ("label", label)):
        if _is_blank(row[column]):
            raise DataError(f"{where}: empty {role} in column {column!r}")
    return Row(text=_string(where, row, text, "text"), label=_name(where, row, label, "label"))


def _prompted(where: str, row: dict[str, Any], fields: Fields) -> Row:
    prompt = _string(where, row, fields.text or "", "prompt")
    response = _string(where, row, fields.label or "", "response")
    if fields.input is not None and not _is_blank(row[fields.input]):
        prompt = f"{prompt}\n\n{_string(where, row, fields.input, 'input')}"
    return Row(text=prompt, label=response)


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _chat(where: str, value: Any, column: str, *, encoded: bool) -> Row:
    """A chat list: turns of {role, content}, the last the assistant's response, the one before
    it the user's prompt. `encoded`: a CSV cell, where the list is JSON text."""
    at = f"{where}: column {column!r}"
    if _is_blank(value):
        raise DataError(f"{at}: empty messages, expected {_CHAT}")
    if encoded and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise DataError(f"{at}: invalid JSON (column {error.colno}: {error.msg}); expected {_CHAT}") from None
        except RecursionError:
            raise DataError(f"{at}: invalid JSON: nested too deeply; expected {_CHAT}") from None
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise DataError(f"{at}: expected {_CHAT}, got {got}")
    turns = []
    for i, item in enumerate(value, start=1):
        if not isinstance(item, dict) or "role" not in item or "content" not in item:
            raise DataError(f"{at}: message {i}: expected a {{role, content}} object, got {_short(item)}")
        role, content = item["role"], item["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise DataError(f"{at}: message {i}: unknown role {_short(role)}; roles: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{at}: message {i}: content must be a string, got {type(content).__name__}")
        turns.append((role, content))
    last = len(turns)
    if turns[-1][0] != "assistant":
        raise DataError(f"{at}: message {last}: the last message must be the assistant's response, "
                        f"got role {turns[-1][0]!r}")
    if not turns[-1][1].strip():
        raise DataError(f"{at}: message {last}: empty response (the assistant's content)")
    if not any(role == "user" for role, _ in turns):
        raise DataError(f"{at}: no user message; expected the user's prompt before the assistant's response")
    if turns[-2][0] != "user":
        raise DataError(f"{at}: message {last - 1}: the message before the assistant's response must be the user's, "
                        f"got role {turns[-2][0]!r}")
    if not turns[-2][1].strip():
        raise DataError(f"{at}: message {last - 1}: empty prompt (the user's content)")
    return Row(text=turns[-2][1], label=turns[-1][1], turns=tuple(turns[:-1]))


def row_of(fields: Fields, where: str, row: dict[str, Any], *, encoded: bool = False) -> Row:
    """The fields `fields` names of one row (`encoded`: a CSV row, whose chat list is JSON text)."""
    if fields.kind == "classification":
        read = _classified(where, row, fields.text or "", fields.label or "")
    elif fields.kind == "language_modeling":
        read = Row(text=_string(where, row, fields.text or "", "text"))
    elif fields.messages is not None:
        read = _chat(where, row[fields.messages], fields.messages, encoded=encoded)
    else:
        read = _prompted(where, row, fields)
    if fields.group is None:
        return read
    return Row(text=read.text, label=read.label, group=_name(where, row, fields.group, "group"), turns=read.turns)


# ---------------------------------------------------------------------------------------------
# Files


def utf8_text(path: Path) -> str:
    """The file's text; not UTF-8 is a DataError naming the line and byte."""
    try:
        data = read_bytes(path)
    except FileProblem as error:
        raise DataError(f"{error.path}: (file): {error.problem}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 (byte {error.start}: {error.reason}); "
                        "the file must be UTF-8 text") from None


def _csv_frame(path: Path, *, strict_utf8: bool) -> Any:
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    source: Any = io.StringIO(utf8_text(path).removeprefix("\ufeff")) if strict_utf8 else path
    try:
        return pd.read_csv(source, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: (file): empty file, expected a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OverflowError) as error:
        detail = " ".join(str(error).split())[:200]
        raise DataError(f"{path}: (file): cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {detail}") from None


def _json(text: str, path: Path, lineno: int) -> Any:
    """One JSON value: the whole file (lineno 0) or one line of it; DataError names the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        line = error.lineno if lineno == 0 else lineno
        raise DataError(f"{path}: line {line}: invalid JSON (column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: line {max(lineno, 1)}: invalid JSON here: nested too deeply") from None


def json_objects(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for each record: a JSON array of objects, or one object per line."""
    content = utf8_text(path)
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        records = _json(content, path, 0)
        located = [(f"{path}: item {i}", record) for i, record in enumerate(records, start=1)]
    else:
        located = [(f"{path}: line {lineno}", _json(line, path, lineno))
                   for lineno, line in enumerate(content.splitlines(), start=1) if line.strip()]
    for where, record in located:
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return located


def _parquet_records(path: Path, kind: str, columns: ColumnsConfig, text: str,
                     label: str) -> tuple[Fields, list[dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    unreadable = (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError, NotImplementedError)
    try:
        file = pq.ParquetFile(path)
        names = [str(name) for name in file.schema_arrow.names]
    except unreadable as error:
        raise _not_parquet(path, error) from None
    with file:
        fields = resolve_fields(kind, names, f"{path}: (columns)", columns, text=text, label=label)
        try:
            return fields, file.read(columns=fields.columns).to_pylist()
        except unreadable as error:
            raise _not_parquet(path, error) from None


def _not_parquet(path: Path, error: BaseException) -> DataError:
    detail = " ".join(str(error).split())[:200]
    return DataError(f"{path}: (file): cannot read as Parquet: {detail}")


def read_rows(path: Path, *, kind: str, columns: ColumnsConfig, text: str = "text", label: str = "label") -> list[Row]:
    """The rows of a checked, non-empty data file, read for task kind `kind`."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        frame = _csv_frame(path, strict_utf8=kind != "classification")
        fields = resolve_fields(kind, [str(c) for c in frame.columns], f"{path}: (header)", columns,
                                text=text, label=label)
        records = frame[fields.columns].to_dict("records")
        return [row_of(fields, f"{path}: row {i}", record, encoded=True) for i, record in enumerate(records, start=1)]
    if suffix == ".parquet":
        fields, records = _parquet_records(path, kind, columns, text, label)
        return [row_of(fields, f"{path}: row {i}", record) for i, record in enumerate(records, start=1)]
    rows = []
    for where, record in json_objects(path):
        rows.append(row_of(resolve_fields(kind, list(record), where, columns, text=text, label=label), where, record))
    return rows
