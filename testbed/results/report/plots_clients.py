"""The report's per-client resource figures: peak memory against the memory budget, and energy
per client (compute and radio stacked); for fleets, per device class. Each returns None when
there is nothing to draw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from testbed.results.report.plots import new_figure
from testbed.results.report.plots_fleet import _box

PEAK_COLOUR, OVER_COLOUR, BUDGET_COLOUR = "#4C72B0", "#C44E52", "#222222"


def memory_figure(memory: pd.DataFrame, by_class: bool) -> go.Figure | None:
    """Per client a bar of its peak memory (red when it went over its budget) and a black tick
    at its budget; with ``by_class`` a box per device class of its clients' peaks (p5-p95
    whiskers) and a tick at the class's median budget."""
    if memory.empty or not memory["peak_rss_mb"].notna().any():
        return None
    key = "device_class" if by_class else "who"
    rows = list(dict.fromkeys(memory[key]))
    fig = new_figure(150 + 26 * len(rows), xaxis={"title": {"text": "memory (MB)"}, "rangemode": "tozero"},
                     yaxis={"autorange": "reversed"}, barmode="overlay")
    if by_class:
        for cls, part in memory.groupby(key, sort=False):
            peaks = part["peak_rss_mb"].dropna().to_numpy()
            if len(peaks):
                stats = {k: [round(float(v), 2)] for k, v in _box(peaks).items()}
                fig.add_box(y=[cls], orientation="h", **stats, name="peak (clients)", showlegend=cls == rows[0],
                            legendgroup="peak", marker={"color": PEAK_COLOUR}, fillcolor="#c6d4ea", hoverinfo="x+y")
        budget = memory.groupby(key, sort=False)["memory_budget_mb"].median()
    else:
        over = memory["over_rounds"] > 0
        fig.add_bar(y=memory[key], x=memory["peak_rss_mb"], orientation="h", name="peak RSS",
                    marker={"color": np.where(over, OVER_COLOUR, PEAK_COLOUR)},
                    customdata=np.column_stack([memory["over_rounds"], memory["rounds"]]),
                    hovertemplate="%{y}: peak %{x:.1f} MB<br>over budget in %{customdata[0]} of %{customdata[1]} "
                                  "rounds<extra></extra>")
        budget = memory.set_index(key)["memory_budget_mb"]
    budget = budget.dropna()
    if len(budget):
        fig.add_scatter(y=list(budget.index), x=budget.to_numpy(), mode="markers", name="budget",
                        marker={"symbol": "line-ns-open", "size": 18, "color": BUDGET_COLOUR, "line": {"width": 3}},
                        hovertemplate="%{y}: budget %{x:.0f} MB<extra></extra>")
    return fig


def energy_figure(energy: pd.DataFrame, by_class: bool) -> go.Figure | None:
    """Energy per client over the run (per device class: the mean per client), compute and
    radio stacked; rows without any energy figure are listed as 'no figure'."""
    if energy.empty or not energy["energy_j"].notna().any():
        return None
    unit = "mean J per client" if by_class else "J"
    fig = new_figure(150 + 26 * len(energy), barmode="stack", xaxis_title=f"energy over the run ({unit})",
                     yaxis={"autorange": "reversed", "categoryorder": "array", "categoryarray": list(energy["who"])})
    custom = np.column_stack([energy["energy_j"].round(3), energy["rounds"], energy["nan_rounds"], energy["clients"]])
    split = energy["compute_energy_j"].notna() | energy["radio_energy_j"].notna()
    for column, name, colour in (("compute_energy_j", "compute", "#4C72B0"), ("radio_energy_j", "radio", "#DD8452")):
        fig.add_bar(y=energy["who"], x=energy[column].where(split), orientation="h", name=name,
                    marker={"color": colour}, customdata=custom,
                    hovertemplate="%{y}: " + name + " %{x:.4g} J<br>total %{customdata[0]} J, %{customdata[3]} "
                                  "client(s)<br>%{customdata[2]} of %{customdata[1]} client-rounds without a "
                                  "figure<extra></extra>")
    whole = energy[~split & energy["energy_j"].notna()]
    if len(whole):  # energy_j without its split
        fig.add_bar(y=whole["who"], x=whole["energy_j"], orientation="h", name="total", marker={"color": "#8C8C8C"})
    none = energy[energy["energy_j"].isna()]
    if len(none):
        fig.add_scatter(y=none["who"], x=np.zeros(len(none)), mode="text", text=["no figure (NaN)"] * len(none),
                        textposition="middle right", name="no figure", textfont={"color": "#C44E52"},
                        hovertemplate="%{y}: no energy figure<extra></extra>")
    return fig
