"""``testbed compare``: several frameworks on the same fleet, data and seed(s);
DIR/comparison.csv and .md (the table also on stdout)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from testbed.cli.common import add_multi_run_options, bad_input, interrupt_on_sigterm, table_document


def add_parser(subparsers: Any) -> None:
    """Add ``compare`` to the ``testbed`` command."""
    cmp = subparsers.add_parser("compare", help="run several frameworks on the same fleet, data and seed; "
                                                "write DIR/comparison.csv and .md")
    cmp.add_argument("scenario", help="scenario YAML file")
    cmp.add_argument("--frameworks", default="fedllm,kd,split", help="comma-separated (default fedllm,kd,split)")
    cmp.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: mean and 95%% CI (default: the scenario's)")
    add_multi_run_options(cmp, out_help="folder of the run folders (DIR/<framework>/) and the comparison")


def cmd_compare(args) -> int:
    """0 if every run completed, 1 if one did not, 2 on bad input."""
    from testbed.config.scenario import ScenarioError
    from testbed.results.compare import CompareError, parse_frameworks, parse_seeds
    from testbed.sim.batch import compare

    interrupt_on_sigterm()
    out_dir = Path(args.out)
    try:
        table = compare(args.scenario, out_dir, frameworks=parse_frameworks(args.frameworks),
                        seeds=parse_seeds(args.seeds), overrides=args.overrides,
                        target_accuracy=args.target_accuracy, target=args.target, quiet=args.quiet,
                        resume=args.resume, overwrite=args.overwrite)
    except (CompareError, ScenarioError) as exc:
        return bad_input(str(exc))
    if args.json:
        print(table_document(table, out_dir))
    else:
        print((out_dir / "comparison.md").read_text(), end="")
    if not args.quiet:
        print(f"written: {out_dir / 'comparison.csv'}, {out_dir / 'comparison.md'}", file=sys.stderr)
    return 0 if (table["status"] == "completed").all() else 1
