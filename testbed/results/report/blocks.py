"""The page's building blocks: table cells and tables (capped at MAX_TABLE_ROWS rows), the
figure writer (each plotly figure a <div> with its data, drawn by the one plotly.js the page
inlines) and how runs and clients are named."""

from __future__ import annotations

import html
import re
from typing import Any, ClassVar

import pandas as pd
import plotly.graph_objects as go

from testbed.results.metrics import generative_values, is_generative
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
    """Turns each figure into the HTML that draws it, and counts the figures of the page."""

    CONFIG: ClassVar[dict[str, Any]] = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}

    def __init__(self) -> None:
        self.names: list[str] = []

    def figure(self, name: str, fig: go.Figure | None, caption: str, empty_note: str) -> str:
        """A <figure> with the plot's <div> (id ``plot-<name>``) and the script that draws it, or a
        note when there was nothing to draw."""
        if fig is None:
            return f'<p class="note">{html.escape(empty_note)}</p>'
        if name in self.names:
            raise ValueError(f"figure {name} drawn twice on one page")
        self.names.append(name)
        height = fig.layout.height or 450
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}", config=self.CONFIG,
                          default_width="100%", default_height=f"{height}px", validate=False)
        return f'<figure>{div}<figcaption>{html.escape(caption)}</figcaption></figure>'


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
