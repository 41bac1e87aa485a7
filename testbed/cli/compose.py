"""``testbed compose``: write a compose file with one service per client (client-<id>) and a server."""

from __future__ import annotations

import sys
from typing import Any

from testbed.cli.common import bad_input, load


def add_parser(subparsers: Any) -> None:
    """Add ``compose`` to the ``testbed`` command."""
    comp = subparsers.add_parser("compose",
                                 help="write a compose file: one service per client (client-<id>) and a server")
    comp.add_argument("scenario", help="scenario YAML file")
    comp.add_argument("-o", "--output", required=True, help="compose file to write")
    comp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    comp.add_argument("--out", help="the server's run directory (default: the scenario's `output`)")
    comp.add_argument("--port", type=int, default=8765, help="the server endpoint's port on 127.0.0.1 (default 8765)")


def cmd_compose(args) -> int:
    """0 once the file is written, 2 on bad input."""
    from testbed.backends.compose import write_compose
    from testbed.config.scenario import ScenarioError

    try:
        scenario = load(args)
    except ScenarioError as exc:
        return bad_input(str(exc))
    path = write_compose(scenario, args.scenario, args.output, args.overrides, out_dir=args.out, port=args.port)
    print(f"written: {path} ({scenario.n_clients} client services + server)", file=sys.stderr)
    return 0
