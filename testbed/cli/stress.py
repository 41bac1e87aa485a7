"""``testbed stress``: one scenario over a grid of overrides (``--sweep``); DIR/stress.csv
(the table also on stdout)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from testbed.cli.common import add_multi_run_options, bad_input, interrupt_on_sigterm, table_document


def add_parser(subparsers: Any) -> None:
    """Add ``stress`` to the ``testbed`` command."""
    st = subparsers.add_parser("stress", help="run a scenario over a grid of overrides; write DIR/stress.csv")
    st.add_argument("scenario", help="scenario YAML file")
    st.add_argument("--sweep", dest="sweeps", action="append", required=True, metavar="KEY=V1,V2,...",
                    help="values of one scenario key (repeatable: several sweeps form a grid)")
    add_multi_run_options(st, out_help="folder of the run folders (DIR/<key=value,...>/) and stress.csv")


def cmd_stress(args) -> int:
    """0 if every run completed, 1 if one did not, 2 on bad input."""
    from testbed.config.scenario import ScenarioError
    from testbed.results.compare import CompareError, markdown_table
    from testbed.results.stress import parse_sweep
    from testbed.sim.batch import stress

    interrupt_on_sigterm()
    out_dir = Path(args.out)
    try:
        sweeps = [parse_sweep(text) for text in args.sweeps]
        table = stress(args.scenario, out_dir, sweeps=sweeps, overrides=args.overrides,
                       target_accuracy=args.target_accuracy, target=args.target, quiet=args.quiet,
                       resume=args.resume, overwrite=args.overwrite)
    except (CompareError, ScenarioError) as exc:
        return bad_input(str(exc))
    if args.json:
        print(table_document(table, out_dir))
    else:
        print(markdown_table(table, [s.key for s in sweeps]), end="")
    if not args.quiet:
        print(f"written: {out_dir / 'stress.csv'}", file=sys.stderr)
    return 0 if (table["status"] == "completed").all() else 1
