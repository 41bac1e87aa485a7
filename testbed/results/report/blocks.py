"""The page's building blocks: table cells and tables (capped at MAX_TABLE_ROWS rows), the
figure writer (PNG beside the page and base64 inside it) and how runs and clients are named."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from testbed.results.metrics import generative_values, is_generative
from testbed.results.report import plots
from testbed.results.report.load import RunData

MAX_TABLE_ROWS = 500  # a longer table shows its first rows and says where the rest is


def cell(value: Any) -> str:
    """A table cell's text: whole floats as integers, others to 4 significant digits (1 decimal
    from 1000 on), NA empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def table(df: pd.DataFrame, source: str = "") -> str:
    """An escaped HTML table of a DataFrame, scrollable when large; beyond MAX_TABLE_ROWS rows
    only the first ones, with a note naming ``source`` (where the whole table is)."""
    note = ""
    if len(df) > MAX_TABLE_ROWS:
        where = f"; the whole table is in {source}" if source else ""
        note = f'<p class="note">First {MAX_TABLE_ROWS:,} of {len(df):,} rows{html.escape(where)}.</p>'
        df = df.head(MAX_TABLE_ROWS)
    cells = df.map(cell) if len(df) else df
    return f'<div class="scroll">{cells.to_html(index=False, border=0, escape=True)}</div>' + note


def slug(name: str) -> str:
    """A file- and anchor-safe form of a name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class PageWriter:
    """Writes each plot as ``<out_dir>/<name>.png`` and returns the HTML that embeds it."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*.png"):  # a plot that has no data this time must not linger
            old.unlink()

    def figure(self, name: str, fig: Figure | None, caption: str, empty_note: str) -> str:
        """A <figure> with the plot embedded as PNG, or a note when there was nothing to draw."""
        if fig is None:
            return f'<p class="note">{html.escape(empty_note)}</p>'
        png = plots.to_png(fig)
        (self.out_dir / f"{name}.png").write_bytes(png)
        data = base64.b64encode(png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
                f"<figcaption>{html.escape(caption)} ({html.escape(name)}.png)</figcaption></figure>")


def client_names(run: RunData) -> dict[int, str]:
    """Client id -> name, from summary.json's clients (else client_rounds.csv's device)."""
    clients = run.summary.get("clients") or []
    if clients:
        return {int(c["client"]): str(c.get("name", "")) for c in clients if "client" in c}
    if "device" in run.client_rounds and len(run.client_rounds):
        last = run.client_rounds.drop_duplicates("client", keep="last")
        return dict(zip(last["client"].astype(int), last["device"].astype(str)))
    return {}


def run_label(run: RunData) -> str:
    """How a run is named on the page: its framework, else its folder."""
    return str(run.summary.get("framework") or run.path.name)


def task_summary(run: RunData) -> dict[str, Any]:
    """summary.json, with a generative run's final and initial perplexity, ROUGE-L and exact
    match taken from rounds.csv where summary.json lacks them."""
    summary = dict(run.summary)
    if is_generative(run.rounds, summary):
        for key, value in generative_values(run.rounds).items():
            if summary.get(key) is None and pd.notna(value):
                summary[key] = value
    return summary
