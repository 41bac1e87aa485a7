"""`testbed report DIR`: one self-contained HTML page (``DIR/report/index.html``, plotly.js
inlined, interactive plots, no network needed) for a run, compare or stress folder: the timeline
(one row per client, or above 50 clients one lane per device class), client round time and
straggler delay distributions, the task's metrics and loss versus simulated wall-clock (accuracy;
perplexity, ROUGE-L and exact match for generative tasks), memory against budget and energy per
client, bytes per exchange kind, straggler attribution, a stress folder's grid and the tables
(docs/report.md)."""

from __future__ import annotations

from pathlib import Path

from testbed.results.report.load import ReportError, load_source

__all__ = ["ReportError", "build_report"]


def build_report(folder: Path | str) -> Path:
    """Write ``<folder>/report/index.html``; returns the page's path. Raises
    ReportError (``<path>: <what is missing>``) on a folder that is neither a run nor a compare."""
    from testbed.results.report.page import write_page  # plotly only once the input is known good

    folder = Path(folder)
    source = load_source(folder)
    return write_page(source, folder / "report")
