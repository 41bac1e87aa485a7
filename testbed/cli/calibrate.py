"""``testbed calibrate``: measure this host's sustained compute and memory bandwidth
(stored in the asset cache as calibration-<threads>t.json, printed as JSON)."""

from __future__ import annotations

import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Add ``calibrate`` to the ``testbed`` command."""
    cal = subparsers.add_parser("calibrate", help="measure this host's sustained compute and memory bandwidth")
    cal.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as client workers use)")
    cal.add_argument("--seconds", type=float, default=2.0, help="measurement time per kernel")
    cal.add_argument("--compare", action="store_true",
                     help="also predict published small-LLM decode speeds of profiled devices (roofline) and print the ratios")


def cmd_calibrate(args) -> int:
    import json

    from testbed.host.calibration import calibrate_host
    from testbed.ml.assets import cache_dir

    cal = calibrate_host(threads=args.threads, seconds=args.seconds)
    path = cache_dir() / f"calibration-{args.threads}t.json"
    path.write_text(json.dumps(cal.to_dict(), indent=2) + "\n")
    print(json.dumps(cal.to_dict(), indent=2))
    print(f"stored in {path}", file=sys.stderr)
    if args.compare:
        from rich.console import Console

        from testbed.results.reference_check import compare_with_published, format_predictions, host_estimate

        console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
        console.print(format_predictions(compare_with_published(cal), host_estimate(cal)))
    return 0
