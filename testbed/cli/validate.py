"""``testbed validate``: check a scenario (and its ``--set`` overrides) without running it."""

from __future__ import annotations

from typing import Any

from testbed.cli.common import bad_input, load


def add_parser(subparsers: Any) -> None:
    """Add ``validate`` to the ``testbed`` command."""
    val = subparsers.add_parser("validate", help="check a scenario without running it")
    val.add_argument("scenario")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def cmd_validate(args) -> int:
    """0 and a one-line summary if the scenario is valid, 2 and one ``error: file: field:
    problem`` line if not: the schema, the names and files it points to, and the checks against
    its model's config.json, its data and this host (testbed.cli.common.load), no weights loaded."""
    from testbed.config.node import one_line
    from testbed.config.scenario import ScenarioError

    try:
        scenario = load(args)
    except ScenarioError as exc:
        return bad_input(str(exc))
    print(f"{one_line(args.scenario)}: ok ({scenario.framework.name}, {scenario.n_clients} clients, "
          f"{scenario.framework.rounds} rounds, model {scenario.model})")
    return 0
