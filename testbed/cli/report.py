"""``testbed report``: an interactive HTML report (DIR/report/index.html, one self-contained page)
of a run, compare or stress folder."""

from __future__ import annotations

from typing import Any

from testbed.cli.common import bad_input


def add_parser(subparsers: Any) -> None:
    """Add ``report`` to the ``testbed`` command."""
    rep = subparsers.add_parser("report", help="write an interactive HTML report (DIR/report/index.html) of a run, compare or "
                                                "stress folder")
    rep.add_argument("dir", help="run folder, compare folder or stress folder")


def cmd_report(args) -> int:
    """0 and the index's path, 2 if the folder is not a run, compare or stress folder."""
    from testbed.results.report import ReportError, build_report

    try:
        index = build_report(args.dir)
    except ReportError as exc:
        return bad_input(str(exc))
    print(index)
    return 0
