"""The names a valid scenario points to must resolve: its framework, its device and link
profiles, and the files it names (link traces, the dataset file, the availability file).

A missing or unreadable named file is the scenario's problem (``scenario: field: file not
found: path``); a file that is there but wrong is that file's (``trace: line 7: ... (from
scenario fleet.0.link.trace_up)``). Either way one line; the first problem found, with how many
more there are. The dataset's content is checked with the model's (testbed.ml.preflight).
"""

from __future__ import annotations

from pathlib import Path

from testbed.config.files import FileProblem, regular_file
from testbed.config.node import ScenarioError, one_line, problem_line
from testbed.config.schema import Scenario
from testbed.config.topology import LinkSpec


def named_file(source: object, field: str, path: str) -> Path:
    """`path`, named by the scenario's `field`, as an existing regular file; else ScenarioError."""
    try:
        return regular_file(path)
    except FileProblem as exc:
        raise ScenarioError.at(source, field, f"{exc.problem}: {one_line(exc.path)}") from None


def from_file(problem: str, source: object, field: str) -> str:
    """A named file's own problem (it starts with that file's path), and who named it."""
    return f"{one_line(problem)} (from {one_line(str(source))} {field})"


def _trace_problem(path: str, source: object, field: str) -> str | None:
    from network import TraceError, load_mahimahi

    try:
        load_mahimahi(named_file(source, field, path))
    except ScenarioError as exc:
        return str(exc)
    except TraceError as exc:
        return from_file(str(exc), source, field)
    return None


def _link_problems(scenario: Scenario, source: object) -> list[str]:
    from device_profiles import ProfileError, get_device, get_link

    problems: list[str | None] = []
    seen: set[str] = set()  # a catalog file that does not load fails every lookup: report it once
    traces: dict[str, str | None] = {}

    def profile(get, name: str, field: str):
        try:
            return get(name)
        except ProfileError as exc:
            if str(exc) not in seen or not getattr(exc, "path", None):
                problems.append(_profile_problem(exc, source, field))
            seen.add(str(exc))
            return None

    for i, entry in enumerate(scenario.fleet):
        profile(get_device, entry.device, f"fleet.{i}.device")
        link = entry.link
        if isinstance(link, str):
            link = profile(get_link, link, f"fleet.{i}.link")
            if link is None:
                continue
        for direction in ("down", "up"):
            path = getattr(link, f"trace_{direction}")
            if path is not None:
                field = f"fleet.{i}.link.trace_{direction}"
                if not isinstance(entry.link, LinkSpec):
                    field = f"fleet.{i}.link ({entry.link}: trace_{direction})"
                if str(path) not in traces:  # entries sharing a trace file read it once
                    traces[str(path)] = _trace_problem(str(path), source, field)
                problems.append(traces[str(path)])
    return [p for p in problems if p is not None]


def _profile_problem(exc: Exception, source: object, field: str) -> str:
    """An unknown name is the scenario's problem; a catalog file that does not load is that
    file's (its first problem, a loader lists one per line)."""
    lines = str(exc).splitlines() or [""]
    more = len(lines) - 1
    message = lines[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
    if getattr(exc, "path", None):
        return from_file(message, source, field)
    return problem_line(source, field, message)


def _availability_problem(scenario: Scenario, source: object) -> str | None:
    from testbed.config.availability import AvailabilityError, load_fedscale

    try:
        load_fedscale(named_file(source, "availability.path", scenario.availability.path), 1)
    except ScenarioError as exc:
        return str(exc)
    except AvailabilityError as exc:
        return from_file(str(exc), source, "availability.path")
    return None


def first_problem(problems: list[str]) -> str:
    """The first of several problem lines, and how many more there are."""
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def check_references(scenario: Scenario, source: str) -> None:
    """Names that point elsewhere (profiles, files, frameworks) must resolve."""
    from testbed.config.registry import framework_names

    problems = []
    if scenario.framework.name not in framework_names():
        problems.append(problem_line(source, "framework.name", f"unknown framework '{scenario.framework.name}'; "
                                                               f"supported: {', '.join(framework_names())}"))
    problems += _link_problems(scenario, source)
    if scenario.dataset.path is not None:
        try:
            named_file(source, "dataset.path", scenario.dataset.path)
        except ScenarioError as exc:
            problems.append(str(exc))
    if scenario.availability.kind == "fedscale":
        problems.append(_availability_problem(scenario, source))
    problems = list(dict.fromkeys(p for p in problems if p is not None))  # a shared file's problem once
    if problems:
        raise ScenarioError(first_problem(problems))
