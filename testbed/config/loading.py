"""Reading a scenario: YAML, ``--set`` overrides, validation, error messages.

Every problem is reported as one line ``file: field: problem`` (:class:`ScenarioError`): a file
that is not a readable UTF-8 regular file, YAML that is not valid or not a mapping, nesting or
alias expansion past what any scenario needs, a ``--set`` that is not ``key=value`` with a YAML
value, and every field the schema refuses (the first of them, and how many more there are).
The files a scenario names are checked in references.py; paths in the file are relative to
its folder, `--set` values and `output` to the current directory (paths.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from testbed.config.files import FileProblem, read_text
from testbed.config.node import ScenarioError, problem_line
from testbed.config.paths import resolve_file_paths
from testbed.config.references import check_references
from testbed.config.schema import Scenario

MAX_SCENARIO_BYTES = 4 * 2**20  # a scenario is a few hundred bytes
MAX_DEPTH = 24  # the deepest scenario field is 4 levels down
MAX_VALUES = 100_000  # values after aliases are expanded (`&a [*b, *b, ...]` grows exponentially)

__all__ = ["apply_override", "check_references", "format_validation_error", "load_scenario", "read_raw",
           "validate_raw"]


MAX_FLOW_DEPTH = 200  # `[[[[...` deeper than this is refused before YAML recurses into it (seconds)
_FLOW = re.compile(r"[\[\]{}\"'\n]")


def _flow_depth_line(text: str) -> int | None:
    """The line where `[`/`{` nesting outside quotes passes MAX_FLOW_DEPTH, or None."""
    depth, line, quote = 0, 1, None
    for match in _FLOW.finditer(text):
        ch = match.group()
        if ch == "\n":
            line += 1
        elif quote is not None:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return line
        else:
            depth = max(0, depth - 1)
    return None


def parse_yaml(text: str, source: object, field: str) -> Any:
    """`text` as YAML; anything YAML or its constructors refuse is a ScenarioError at `field`
    (or at the line, where YAML says which)."""
    deep = _flow_depth_line(text)
    if deep is not None:
        where = f"line {deep}" if field == "(file)" else field
        raise ScenarioError.at(source, where, f"nested deeper than {MAX_FLOW_DEPTH} levels; no scenario field is")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None and field == "(file)" else field
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise ScenarioError.at(source, where, f"not valid YAML: {problem}") from None
    except RecursionError:
        raise ScenarioError.at(source, field, "not valid YAML here: nested too deeply") from None
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # e.g. `!!int abc`, `2020-02-30`
        raise ScenarioError.at(source, field, f"not valid YAML: {type(exc).__name__}: {exc}") from None


def read_raw(path: str | Path) -> dict[str, Any]:
    """The scenario file's mapping, before overrides and validation."""
    try:
        text = read_text(path, max_bytes=MAX_SCENARIO_BYTES)
    except FileProblem as exc:
        raise ScenarioError.at(exc.path, "(file)", exc.problem) from None
    raw = parse_yaml(text, path, "(file)")
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ScenarioError.at(path, "(top level)", f"expected a mapping of scenario fields, got {got}")
    return raw


def check_shape(raw: Any, source: object) -> None:
    """No value nested deeper than MAX_DEPTH, and at most MAX_VALUES values in all."""
    seen = 0
    todo: list[tuple[Any, tuple[str, ...]]] = [(raw, ())]
    while todo:
        node, path = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ScenarioError.at(source, "(file)", f"more than {MAX_VALUES:,} values (aliases expanding?); "
                                                     "a scenario has a few dozen")
        if len(path) > MAX_DEPTH:
            raise ScenarioError.at(source, ".".join(path[:MAX_DEPTH]), f"nested deeper than {MAX_DEPTH} levels; "
                                                                      "no scenario field is")
        if isinstance(node, dict):
            todo.extend((v, (*path, str(k))) for k, v in node.items())
        elif isinstance(node, (list, tuple, set, frozenset)):
            todo.extend((v, (*path, str(i))) for i, v in enumerate(node))


# ---------------------------------------------------------------------------------------------
# --set key.sub=value


# Top-level fields whose text form stands for a mapping of one key (`--set output.tracking=mlflow`
# on a scenario that names its output folder as text).
TEXT_SHORT_FORMS = {"output": "dir"}


def apply_override(raw: dict[str, Any], assignment: str, source: object = "(--set)") -> None:
    """Apply one ``key.sub=value`` (``fleet.0.count=3`` indexes lists) to a raw mapping."""
    if "=" not in assignment:
        raise ScenarioError.at(source, "--set", f"expected key=value, got {assignment[:80]!r}")
    key, _, text = assignment.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not all(parts):
        raise ScenarioError.at(source, "--set", f"empty key component in {key[:80]!r} (expected key.sub=value)")
    value = parse_yaml(text, source, key) if text.strip() else ""
    check_shape(value, source)
    node: Any = raw
    short = TEXT_SHORT_FORMS.get(parts[0])
    if short is not None and len(parts) > 1 and isinstance(raw.get(parts[0]), str):
        raw[parts[0]] = {short: raw[parts[0]]}  # `output: runs/x` is `output: {dir: runs/x}`: set beside it
    for i, part in enumerate(parts[:-1]):
        node = _step_into(node, part, parts[i + 1], key, source)
    _assign(node, parts[-1], value, key, source)


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit()


def _step_into(node: Any, part: str, next_part: str, key: str, source: object) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key, source)]
    if not isinstance(node, dict):
        raise ScenarioError.at(source, key, f"--set: '{part}' is inside a value that is not a mapping or list")
    if node.get(part) is None:
        node[part] = [] if _is_index(next_part) else {}
    return node[part]


def _assign(node: Any, part: str, value: Any, key: str, source: object) -> None:
    if isinstance(node, list):
        node[_index(node, part, key, source)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ScenarioError.at(source, key, f"--set: cannot set '{part}' inside a value that is not a mapping or list")


def _index(node: list[Any], part: str, key: str, source: object) -> int:
    if not _is_index(part) or int(part) >= len(node):
        raise ScenarioError.at(source, key, f"--set: '{part}' is not an index of a list of length {len(node)}")
    return int(part)


# ---------------------------------------------------------------------------------------------
# Validation and its messages


def _union_noise(e: dict, errors: list[dict]) -> bool:
    """For `link: name | {...}` given a mapping, "should be a valid string" only adds noise."""
    loc = e["loc"]
    return (e["type"] == "string_type" and loc[-1] == "str"
            and any(o is not e and o["loc"][: len(loc) - 1] == loc[:-1] for o in errors))


# the names pydantic gives union members and validators in an error's location: not fields
_TAG = re.compile(r"^(int|float|str|bool|none|literal\[.*\]|function-[a-z]+\[.*\]|[A-Z][A-Za-z0-9]*)$")


def _location(e: dict) -> str:
    parts = [str(p) for p in e["loc"]]
    last = len(parts) - 1 if e["type"] == "extra_forbidden" else len(parts)  # an unknown key is the user's
    return ".".join(p for i, p in enumerate(parts) if i == last or not _TAG.match(p))


def _scalar(value: object) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not (isinstance(value, int) and value.bit_length() > 64))


def format_validation_error(source: object, err: ValidationError) -> str:
    """The first problem as ``file: field: problem``, and how many more there are."""
    errors = [e for e in err.errors() if not _union_noise(e, err.errors())] or err.errors()
    e = errors[0]
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
    if e["type"] not in ("extra_forbidden", "missing", "value_error") and _scalar(e.get("input")):
        shown = repr(e["input"])
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return problem_line(source, _location(e) or "(top level)", msg + more)


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Read, override and validate a scenario; profile names and named files are checked too.
    The file's paths are relative to its folder; `--set` values and `output` to the current
    directory (testbed.config.paths): every path of the result is absolute."""
    raw = read_raw(path)
    check_shape(raw, path)
    resolve_file_paths(raw, Path(path).expanduser().parent)
    for assignment in overrides:
        apply_override(raw, assignment, path)
        resolve_file_paths(raw, Path.cwd(), only=assignment.partition("=")[0].strip())
    return validate_raw(raw, str(path), resolved=True)


def validate_raw(raw: dict[str, Any], source: str, *, resolved: bool = False) -> Scenario:
    """A raw scenario mapping validated; its relative paths are relative to the current
    directory (a scenario built in memory) unless `resolved` says the caller placed them."""
    check_shape(raw, source)
    if not resolved:
        resolve_file_paths(raw, Path.cwd())
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(format_validation_error(source, err)) from None
    except RecursionError:
        raise ScenarioError.at(source, "(file)", "nested too deeply to validate") from None
    check_references(scenario, source)
    return scenario
