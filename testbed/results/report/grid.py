"""A stress folder's grid: each metric of stress.csv against the first swept key, one line per
combination of the other swept keys, and the table itself."""

from __future__ import annotations

import html
import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from testbed.results.report.blocks import PageWriter, table
from testbed.results.report.load import StressData
from testbed.results.report.plots import FRAMEWORK_COLOURS, LEGEND, MARKERS

BOOKKEEPING = ("target_accuracy", "target_metric", "target_value", "status", "error", "run_dir")
PANEL_COLUMNS = 3
PANEL_HEIGHT_PX = 270


def grid_metrics(stress: pd.DataFrame, swept: list[str]) -> list[str]:
    """stress.csv's metric columns that hold a number for some point, in the table's order."""
    return [c for c in stress.columns if c not in swept and c not in BOOKKEEPING
            and pd.api.types.is_numeric_dtype(stress[c]) and stress[c].notna().any()]


def _text(value) -> str:
    """A swept value as the axis names it (the table's text; NaN empty)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def fig_height(rows: int) -> int:
    """The grid figure's height in pixels for its rows of panels."""
    return 150 + PANEL_HEIGHT_PX * rows


def grid_figure(stress: pd.DataFrame, swept: list[str]) -> go.Figure | None:
    """One panel per metric: x = the first swept key's values (in the table's order), one line
    per combination of the other swept keys (one line when a single key is swept)."""
    metrics = grid_metrics(stress, swept)
    if not metrics:
        return None
    x_key, others = swept[0], swept[1:]
    x_order = list(dict.fromkeys(_text(v) for v in stress[x_key]))
    rows = math.ceil(len(metrics) / PANEL_COLUMNS)
    fig = make_subplots(rows=rows, cols=min(PANEL_COLUMNS, len(metrics)), subplot_titles=metrics,
                        vertical_spacing=0.5 / rows, horizontal_spacing=0.08)
    fig.update_layout(template="plotly_white", height=fig_height(rows),
                      margin={"l": 60, "r": 20, "t": 110, "b": 50}, legend={**LEGEND, "y": 1.0 + 60 / fig_height(rows)})
    lines = list(stress.groupby(others, sort=False, dropna=False)) if others else [((), stress)]
    for i, (values, part) in enumerate(lines):
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(f"{k}={_text(v)}" for k, v in zip(others, values)) or x_key
        for m, metric in enumerate(metrics):
            pts = part[part[metric].notna()]
            fig.add_scatter(x=[_text(v) for v in pts[x_key]], y=pts[metric], name=label, legendgroup=label,
                            showlegend=m == 0 and bool(others), mode="lines+markers",
                            line={"color": FRAMEWORK_COLOURS[i % len(FRAMEWORK_COLOURS)]},
                            marker={"symbol": MARKERS[i % len(MARKERS)], "size": 8},
                            hovertemplate=f"{label}<br>{x_key}=%{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
                            row=m // PANEL_COLUMNS + 1, col=m % PANEL_COLUMNS + 1)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=x_order, title_text=x_key)
    return fig


def grid_section(data: StressData, writer: PageWriter) -> str:
    """The grid's plot and stress.csv."""
    keys = ", ".join(data.swept)
    caption = (f"Each metric of stress.csv (one panel each) against {data.swept[0]}"
               + (f"; one line per {', '.join(data.swept[1:])}" if len(data.swept) > 1 else "")
               + ". Same definitions as testbed compare.")
    return (f"<h2 id=grid>Grid over {html.escape(keys)}</h2>"
            + writer.figure("grid", grid_figure(data.stress, data.swept), caption, "stress.csv holds no metric values.")
            + "<p>stress.csv</p>" + table(data.stress, "stress.csv"))
