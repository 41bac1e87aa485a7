"""Reading a scenario: YAML, ``--set`` overrides, validation, error messages, reference checks.

Every problem is reported as ``file: field: problem`` (:class:`ScenarioError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from testbed.config.node import ScenarioError
from testbed.config.schema import Scenario
from testbed.config.topology import LinkSpec


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` (``fleet.0.count=3`` indexes lists) to a raw mapping."""
    if "=" not in assignment:
        raise ScenarioError(f"--set {assignment}: expected key=value")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ScenarioError(f"--set {assignment}: empty key component")
    value = yaml.safe_load(text) if text.strip() else ""
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _step_into(node, part, parts[i + 1], key)
    _assign(node, parts[-1], value, key)


def _step_into(node: Any, part: str, next_part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if not isinstance(node, dict):
        raise ScenarioError(f"--set {key}: '{part}' is inside a value that is not a mapping or list")
    if node.get(part) is None:
        node[part] = [] if next_part.isdigit() else {}
    return node[part]


def _assign(node: Any, part: str, value: Any, key: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, key)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ScenarioError(f"--set {key}: cannot set '{part}' inside a scalar")


def _index(node: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ScenarioError(f"--set {key}: '{part}' is not an index of a list of length {len(node)}")
    return int(part)


def _union_noise(e: dict, errors: list[dict]) -> bool:
    """For `link: name | {...}` given a mapping, "should be a valid string" only adds noise."""
    loc = e["loc"]
    return (e["type"] == "string_type" and loc[-1] == "str"
            and any(o is not e and o["loc"][: len(loc) - 1] == loc[:-1] for o in errors))


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    errors = err.errors()
    for e in errors:
        if _union_noise(e, errors):
            continue
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def read_raw(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ScenarioError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping of scenario fields at the top level")
    return raw


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Read, override and validate a scenario; profile names are checked too."""
    path = Path(path)
    raw = read_raw(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_raw(raw, str(path))


def validate_raw(raw: dict[str, Any], source: str) -> Scenario:
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(format_validation_error(source, err)) from None
    check_references(scenario, source)
    return scenario


def _trace_problems(link: LinkSpec, field: str) -> list[str]:
    from network import TraceError, load_mahimahi

    problems = []
    for direction in ("down", "up"):
        path = getattr(link, f"trace_{direction}")
        if path is None:
            continue
        try:
            load_mahimahi(Path(path).expanduser())
        except (TraceError, OSError) as exc:
            problems.append(f"{field}.trace_{direction}: {exc}")
    return problems


def check_references(scenario: Scenario, source: str) -> None:
    """Names that point elsewhere (profiles, files, frameworks) must resolve."""
    from device_profiles import ProfileError, get_device, get_link
    from testbed.config.registry import framework_names

    problems = []
    if scenario.framework.name not in framework_names():
        problems.append(
            f"framework.name: unknown framework '{scenario.framework.name}'; "
            f"supported: {', '.join(framework_names())}"
        )
    for i, entry in enumerate(scenario.fleet):
        try:
            get_device(entry.device)
        except ProfileError as exc:
            problems.append(f"fleet.{i}.device: {exc}")
        if isinstance(entry.link, str):
            try:
                get_link(entry.link)
            except ProfileError as exc:
                problems.append(f"fleet.{i}.link: {exc}")
        else:
            problems.extend(_trace_problems(entry.link, f"fleet.{i}.link"))
    if scenario.dataset.path is not None and not Path(scenario.dataset.path).expanduser().is_file():
        problems.append(f"dataset.path: file not found: {scenario.dataset.path}")
    if scenario.availability.kind == "fedscale":
        from testbed.config.availability import AvailabilityError, load_fedscale

        try:
            load_fedscale(scenario.availability.path, 1)
        except AvailabilityError as exc:
            problems.append(f"availability.path: {exc}")
    if problems:
        raise ScenarioError("\n".join(f"{source}: {p}" for p in problems))
