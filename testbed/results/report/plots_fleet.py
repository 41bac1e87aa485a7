"""The report's figures that scale with the fleet: the device-class lanes that replace the
per-client timeline above analysis.FLEET_CLIENTS clients, and the distributions of client round
time and straggler delay drawn for every run. Distributions are binned and boxes summarised here
(numpy), so a figure's size does not grow with the fleet. Each returns None when there is
nothing to draw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from testbed.results.recorder import FAILED_OUTCOMES
from testbed.results.report.analysis import busy_share
from testbed.results.report.plots import LEGEND, ROUND_LINES

LANE_BINS = 1000  # time bins across a panel: about one per pixel column of the plot
ZOOM_ROUNDS = 3  # the lanes' second panel stretches the first rounds
LINES_UP_TO = 40  # rounds: with more, the whole-run panel draws no round lines
OUTCOME_COLOURS = {"ok": "#4C72B0", "discarded": "#8C8C8C", "failed": "#C44E52", "oom": "#8172B3"}
BOX_COLOUR = "#4C72B0"
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "legend": LEGEND}


def lane_label(device_class: str, clients: int) -> str:
    """A lane's name: the device class and its clients."""
    return f"{device_class} ({clients:,} clients)"


def lanes_figure(times: pd.DataFrame, sizes: pd.Series, rounds: pd.DataFrame) -> go.Figure | None:
    """One lane per device class, x = simulated seconds: a heatmap of the share of the class's
    clients inside a client-round span (download start to upload end or failure), averaged
    over each of LANE_BINS bins; red ticks where clients of the class failed (size ~ count).
    With more than 2 x ZOOM_ROUNDS rounds a second panel stretches the first ZOOM_ROUNDS; with
    more than LINES_UP_TO rounds the whole-run panel draws no round lines."""
    if times.empty or sizes.empty:
        return None
    last_round_end_s = rounds["sim_end_s"].max() if len(rounds) else np.nan
    span_s = max(float(times["end_s"].max()), float(last_round_end_s) if pd.notna(last_round_end_s) else 0.0)
    windows = [(0.0, span_s or 1.0, rounds, "whole run")]
    trained = rounds[(rounds["round"] > 0) & rounds["sim_end_s"].notna()]
    if len(trained) > 2 * ZOOM_ROUNDS:
        first = trained.head(ZOOM_ROUNDS)
        start_s = first["sim_start_s"].min()
        t0 = float(start_s) if pd.notna(start_s) else 0.0
        t1 = float(first["sim_end_s"].max())
        if t1 > t0:
            windows.append((t0, t1, first, f"rounds {int(first['round'].min())}-{int(first['round'].max())}, stretched"))
    edges = [np.linspace(t0, t1, LANE_BINS + 1) for t0, t1, _, _ in windows]
    grids = [busy_share(times, sizes, e) for e in edges]
    vmax = max(float(g.max()) for g in grids) or 1.0
    labels = [lane_label(c, n) for c, n in sizes.items()]
    fig = make_subplots(rows=len(windows), cols=1, subplot_titles=[w[3] for w in windows], vertical_spacing=0.12)
    fig.update_layout(height=int(110 + (70 + 30 * len(sizes)) * len(windows)), **LAYOUT)
    failed = times[times["outcome"].isin(FAILED_OUTCOMES)]
    for row, ((t0, t1, rnds, _), e, shares) in enumerate(zip(windows, edges, grids), start=1):
        centres = (e[:-1] + e[1:]) / 2
        fig.add_heatmap(z=np.round(shares, 4), x=np.round(centres, 3), y=labels, zmin=0.0, zmax=vmax,
                        colorscale="Blues", showscale=row == 1, name="busy share",
                        colorbar={"title": {"text": "share in a round", "side": "right"}, "len": 0.5, "y": 0.75},
                        hovertemplate="%{y}<br>t %{x:.4g} s<br>%{z:.1%} of the class in a client-round<extra></extra>",
                        row=row, col=1)
        _failure_ticks(fig, failed[(failed["end_s"] >= t0) & (failed["end_s"] <= t1)], sizes, e, row, labels)
        if len(rnds) <= min(LINES_UP_TO, ROUND_LINES) + 1:
            for end_s in rnds.loc[(rnds["round"] > 0) & rnds["sim_end_s"].notna(), "sim_end_s"]:
                fig.add_vline(x=float(end_s), line={"dash": "dash", "width": 0.7, "color": "#555555"}, row=row, col=1)
        fig.update_xaxes(range=[t0, t1 + (t1 - t0) * 0.01], row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
    fig.update_xaxes(title_text="simulated time (s)", row=len(windows), col=1)
    return fig


def _failure_ticks(fig: go.Figure, failed: pd.DataFrame, sizes: pd.Series, edges: np.ndarray, row: int,
                   labels: list[str]) -> None:
    """Red ticks on each lane: one per time bin with failures, larger for more."""
    if failed.empty:
        return
    label = dict(zip(sizes.index, labels))
    counts = failed.groupby(["device_class", np.digitize(failed["end_s"], edges[1:-1])]).size()
    classes, bins = counts.index.get_level_values(0), counts.index.get_level_values(1).to_numpy()
    centres = (edges[bins] + edges[bins + 1]) / 2
    fig.add_scatter(x=np.round(centres, 3), y=pd.Index(classes).map(label), mode="markers", name="failures",
                    showlegend=row == 1, customdata=counts.to_numpy(),
                    marker={"symbol": "line-ns-open", "color": "red", "size": 5 + 2 * np.sqrt(counts.to_numpy()),
                            "line": {"width": 1.5}},
                    hovertemplate="%{y}<br>t %{x:.4g} s: %{customdata} failed<extra></extra>", row=row, col=1)


def _box(values: np.ndarray) -> dict[str, float]:
    """A box's summary: p25, median, p75 and whiskers at p5 and p95."""
    p5, q1, med, q3, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    return {"q1": q1, "median": med, "q3": q3, "lowerfence": p5, "upperfence": p95}


def round_time_figure(times: pd.DataFrame, sizes: pd.Series) -> go.Figure | None:
    """Left: client round time (end - start) per device class, of the clients that did not
    fail: box = p25-p75, line = median, whiskers p5-p95. Right: histogram of every
    client-round's time by outcome (log counts from 1,000 client-rounds on)."""
    if times.empty or not np.isfinite(times["time_s"]).any():
        return None
    times = times[np.isfinite(times["time_s"])]
    arrived = times[~times["outcome"].isin(FAILED_OUTCOMES)]
    classes = [c for c in sizes.index if (arrived["device_class"] == c).any()]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.16)
    fig.update_layout(height=max(380, 130 + 30 * len(classes)), **LAYOUT)
    groups = arrived.groupby("device_class")["time_s"]
    for c in classes:
        v = groups.get_group(c).to_numpy()
        stats = {k: [round(float(x), 4)] for k, x in _box(v).items()}
        fig.add_box(y=[f"{c} (n={len(v):,})"], orientation="h", **stats, name=c, showlegend=False,
                    marker={"color": BOX_COLOUR}, fillcolor="#c6d4ea", hoverinfo="x+y", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="client round time (s), clients that did not fail", rangemode="tozero", row=1, col=1)
    edges = np.histogram_bin_edges(times["time_s"], bins=min(60, max(5, len(times) // 5)))
    parts = dict(list(times.groupby("outcome")))
    for outcome in sorted(parts, key=lambda o: (list(OUTCOME_COLOURS).index(o) if o in OUTCOME_COLOURS else 9, o)):
        counts, _ = np.histogram(parts[outcome]["time_s"], bins=edges)
        fig.add_scatter(x=np.round(edges, 4), y=np.r_[counts, counts[-1]], line_shape="hv", mode="lines",
                        name=f"{outcome} ({len(parts[outcome]):,})",
                        line={"color": OUTCOME_COLOURS.get(outcome, "#937860"), "width": 1.6,
                              "dash": "dash" if outcome in FAILED_OUTCOMES else "solid"},
                        hovertemplate=f"{outcome}: %{{y}} client-rounds from %{{x:.4g}} s<extra></extra>", row=1, col=2)
    fig.update_xaxes(title_text="client round time (s)", row=1, col=2)
    fig.update_yaxes(title_text="client-rounds", type="log" if len(times) >= 1000 else "linear", row=1, col=2)
    return fig


def straggler_delay_figure(delays: pd.DataFrame) -> go.Figure | None:
    """Left: per round, the last arrival's end minus the median arrival's end. Right: their
    histogram, with the median and the p90 marked."""
    if delays.empty or not np.isfinite(delays["delay_s"]).any():
        return None
    delays = delays[np.isfinite(delays["delay_s"])]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1)
    fig.update_layout(height=380, showlegend=False, **LAYOUT)
    fig.add_bar(x=delays["round"].astype(int), y=delays["delay_s"], marker={"color": "#DD8452"},
                customdata=delays["arrivals"], name="delay",
                hovertemplate="round %{x}: %{y:.4g} s (%{customdata} arrivals)<extra></extra>", row=1, col=1)
    values = delays["delay_s"].to_numpy()
    counts, edges = np.histogram(values, bins=min(40, max(5, len(values) // 3)))
    fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker={"color": "#DD8452"},
                name="rounds", hovertemplate="%{y} rounds near %{x:.4g} s<extra></extra>", row=1, col=2)
    for q, dash in ((50, "solid"), (90, "dash")):
        v = float(np.percentile(values, q))
        fig.add_vline(x=v, line={"color": "black", "dash": dash, "width": 1.2}, row=1, col=2,
                      annotation_text=f"p{q}: {v:.3g} s", annotation_position="top right")
    fig.update_xaxes(title_text="round", row=1, col=1)
    fig.update_yaxes(title_text="last minus median arrival (s)", row=1, col=1)
    fig.update_xaxes(title_text="straggler delay (s)", row=1, col=2)
    fig.update_yaxes(title_text="rounds", row=1, col=2)
    return fig
