"""``testbed calibrate``: measure this host's sustained compute and memory bandwidth and print
them as JSON (stdout). Nothing is stored: a run measures the host itself, as its clients use
it (testbed.host.calibration), and keeps the figures in its summary.json."""

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

    cal = calibrate_host(threads=args.threads, seconds=args.seconds)
    print(json.dumps(cal.to_dict(), indent=2))
    if args.compare:
        from rich.console import Console

        from testbed.results.reference_check import compare_with_published, format_predictions, host_estimate

        console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
        console.print(format_predictions(compare_with_published(cal), host_estimate(cal)))
    return 0
