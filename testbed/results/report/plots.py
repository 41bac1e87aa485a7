"""The report's figures of one run or a few (plotly figures, drawn in the browser: zoom, pan and
hover). Each returns None when there is nothing to draw, so the page can say so instead. The
numbers are computed before drawing (analysis.py): a figure carries summaries, never a fleet's
raw rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from testbed.results.metrics import STUDENT_CURVES, TASK_METRICS
from testbed.results.report.analysis import SERVER, device_class

WIDTH_PX = 1300
CATEGORY_COLOURS = {
    "compute": "#4C72B0", "failed compute": "#C44E52", "upload": "#DD8452", "download": "#55A868",
    "server work": "#8172B3", "aggregate": "#937860", "other": "#8C8C8C", "waiting": "#E6E6E6",
}
FRAMEWORK_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
KIND_COLOURS = ["#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3"]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5"]
MARKERS = ["circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x", "star"]
STRAGGLER_CLIENTS = 20  # more distinct straggler clients: attribute to device classes
MAX_SPANS = 20_000  # timeline bars drawn; a longer run shows its first rounds and says so
ROUND_LINES = 200  # round ends drawn as lines up to this many rounds
ROUND_LABELS = 40  # and labelled r<N> up to this many
LEGEND = {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"}  # above the plot, clear of the axis title
BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))


def byte_unit(max_bytes: float) -> tuple[float, str]:
    """The largest decimal unit (divisor, name) that keeps max_bytes at 1 or more."""
    return next(((d, name) for d, name in BYTE_UNITS if max_bytes >= d), BYTE_UNITS[-1])


def new_figure(height_px: float, **layout) -> go.Figure:
    """An empty figure in the page's style: white template, legend below, compact margins."""
    fig = go.Figure()
    fig.update_layout(template="plotly_white", height=int(height_px), margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      legend=LEGEND, hoverlabel={"namelength": -1}, **layout)
    return fig


def round_lines(fig: go.Figure, rounds: pd.DataFrame, **where) -> None:
    """Dashed lines at the round ends (up to ROUND_LINES rounds), each labelled ``r<N>`` at its
    top left (up to ROUND_LABELS rounds)."""
    trained = rounds[(rounds["round"] > 0) & rounds["sim_end_s"].notna()]
    if len(trained) > ROUND_LINES:
        return
    labels = len(trained) <= ROUND_LABELS
    for rnd, end_s in zip(trained["round"], trained["sim_end_s"]):
        fig.add_vline(x=float(end_s), line={"dash": "dash", "width": 0.7, "color": "#555555"},
                      annotation_text=f"r{int(rnd)}" if labels else None, annotation_position="top left",
                      annotation_font={"size": 10, "color": "#555555"}, **where)


def timeline_figure(spans: pd.DataFrame, marks: pd.DataFrame, rounds: pd.DataFrame,
                    client_names: dict[int, str]) -> go.Figure | None:
    """Gantt chart: one row per client (and the server), x = simulated seconds; activities
    coloured by category (hover: client, kind, round, bytes, device seconds), waiting light grey,
    failures as red crosses with their cause. Beyond MAX_SPANS spans, the first rounds only."""
    if spans.empty:
        return None
    ids = sorted(set(spans["client"].astype(int)) | set(client_names) | set(marks["client"].astype(int)))
    label = {c: "server" if c == SERVER else f"c{c} {client_names.get(c, '')}".strip() for c in ids}
    if len(spans) > MAX_SPANS:
        last = int(spans["round"].sort_values(ignore_index=True).iloc[MAX_SPANS - 1])
        spans = spans[spans["round"] < max(last, int(spans["round"].min()) + 1)]
        marks = marks[marks["round"] < max(last, int(spans["round"].min()) + 1)]
        rounds = rounds[rounds["round"] <= int(spans["round"].max())]
    fig = new_figure(140 + 26 * len(ids), barmode="overlay", xaxis_title="simulated time (s); dashed lines end rounds",
                     yaxis={"categoryorder": "array", "categoryarray": [label[c] for c in ids][::-1]})
    for category, colour in CATEGORY_COLOURS.items():
        part = spans[spans["category"] == category]
        if part.empty:
            continue
        custom = np.column_stack([part["kind"].fillna(category).astype(str), part["round"].astype(int),
                                  part["payload_bytes"].fillna(0), part["device_s"].astype(float), part["end_s"]])
        fig.add_bar(name=category, orientation="h", y=part["client"].astype(int).map(label), base=part["start_s"],
                    x=part["end_s"] - part["start_s"], marker={"color": colour, "line": {"width": 0}}, width=0.62,
                    customdata=custom, hovertemplate="%{y}<br>%{customdata[0]}, round %{customdata[1]}<br>"
                    "%{base:.3f} s to %{customdata[4]:.3f} s<br>%{customdata[2]:,} bytes<br>device %{customdata[3]:.3f} s"
                    "<extra></extra>")
    if not marks.empty:
        fig.add_scatter(name="failure", x=marks["t_s"], y=marks["client"].astype(int).map(label), mode="markers+text",
                        marker={"symbol": "x", "color": "red", "size": 12}, text=marks["cause"],
                        textposition="top right", textfont={"color": "red", "size": 10},
                        hovertemplate="%{y}: failed at %{x:.3f} s (%{text})<extra></extra>")
    round_lines(fig, rounds)
    return fig


def accuracy_figure(curves: dict[str, list[pd.DataFrame]]) -> go.Figure | None:
    """Accuracy versus simulated wall-clock (metric_figure of ``accuracy``)."""
    return metric_figure(curves, "accuracy")


def metric_figure(curves: dict[str, list[pd.DataFrame]], metric: str) -> go.Figure | None:
    """A task metric (a rounds.csv column: accuracy, perplexity, rouge_l, exact_match) versus
    simulated wall-clock: one colour per framework; several seeds are thin lines; the students'
    (kd: ``student_accuracy``, ``student_perplexity``) dashed. Perplexity on a log axis when it
    spans a factor of 10 or more."""
    known = TASK_METRICS.get(metric)
    better = f" ({'higher' if known.higher_is_better else 'lower'} is better)" if known and metric != "accuracy" else ""
    fig = new_figure(430, xaxis_title="simulated wall-clock (s)", yaxis_title=(known.display if known else metric) + better)
    drawn = _curves(fig, curves, [(metric, "solid", ""), (STUDENT_CURVES.get(metric), "dash", " student")])
    if not drawn:
        return None
    if metric.endswith("perplexity") and min(drawn) > 0 and max(drawn) >= 10 * min(drawn):
        fig.update_yaxes(type="log")
    return fig


def loss_figure(curves: dict[str, list[pd.DataFrame]]) -> go.Figure | None:
    """rounds.csv's train_loss (solid: the mean over the round's clients) and eval_loss (dotted)
    versus simulated wall-clock, one colour per framework."""
    fig = new_figure(400, xaxis_title="simulated wall-clock (s)", yaxis_title="loss")
    drawn = _curves(fig, curves, [("train_loss", "solid", " train"), ("eval_loss", "dot", " eval")])
    return fig if drawn else None


def _curves(fig: go.Figure, curves: dict[str, list[pd.DataFrame]],
            columns: list[tuple[str | None, str, str]]) -> list[float]:
    """Add a line per framework, seed and column (column, dash, label suffix); the values drawn."""
    drawn: list[float] = []
    for i, (name, seeds) in enumerate(curves.items()):
        colour = FRAMEWORK_COLOURS[i % len(FRAMEWORK_COLOURS)]
        under = len(curves) - 1 - i  # earlier frameworks wider, so identical curves stay visible
        single = len(seeds) == 1
        width, size = (1.6 + 1.1 * under, 5 + 1.5 * under) if single else (1.0, 4.0)
        suffix = "" if single else f" ({len(seeds)} seeds)"
        for j, rounds in enumerate(seeds):
            for column, dash, extra in columns:
                if column is None or column not in rounds or rounds[column].isna().all():
                    continue
                pts = rounds[rounds[column].notna()]
                fig.add_scatter(x=pts["sim_end_s"], y=pts[column], name=name + extra + suffix, mode="lines+markers",
                                legendgroup=name + extra, showlegend=j == 0, customdata=pts["round"],
                                line={"color": colour, "width": width, "dash": dash},
                                marker={"symbol": MARKERS[i % len(MARKERS)], "size": size},
                                hovertemplate=f"{name}{extra}<br>round %{{customdata}}, %{{x:.4g}} s<br>"
                                              f"{column} %{{y:.4g}}<extra></extra>")
                drawn += [float(v) for v in pts[column]]
    return drawn


def bytes_figure(tables: dict[str, pd.DataFrame]) -> go.Figure | None:
    """Payload bytes per exchange kind: one bar per kind for a single run, one stacked bar per
    framework (segments = kinds) for several. Hover: exchanges, payload and wire bytes."""
    tables = {name: t for name, t in tables.items() if t["payload_bytes"].sum() > 0}
    if not tables:
        return None
    divisor, unit = byte_unit(max(float(t["payload_bytes"].sum()) for t in tables.values()))
    kinds = sorted({k for t in tables.values() for k in t["kind"]})
    names = list(tables)
    single = len(tables) == 1
    fig = new_figure(140 + 45 * (len(kinds) if single else len(names)), barmode="stack",
                     xaxis_title=f"payload ({unit}), whole run", yaxis={"autorange": "reversed"})
    for k, kind in enumerate(kinds):
        rows = [tables[n].set_index("kind").reindex([kind]).iloc[0] for n in names]
        payload = np.array([float(r["payload_bytes"]) if pd.notna(r["payload_bytes"]) else 0.0 for r in rows])
        custom = [[kind, r["exchanges"], r["wire_bytes"]] for r in rows]
        colour = (CATEGORY_COLOURS["upload" if kind.endswith("_up") else "download"] if single
                  else KIND_COLOURS[k % len(KIND_COLOURS)])
        fig.add_bar(name=kind, orientation="h", y=[kind] if single else names, x=payload / divisor,
                    marker={"color": colour}, customdata=custom, text=[f"{v:.3g} {unit}" for v in payload / divisor],
                    textposition="outside" if single else "inside",
                    hovertemplate="%{y}: %{customdata[0]}<br>%{x:.4g} " + unit + " payload<br>"
                    "%{customdata[1]} exchanges, %{customdata[2]:,} wire bytes<extra></extra>")
    fig.update_layout(showlegend=not single)
    return fig


def straggler_figure(stragglers: pd.DataFrame, client_names: dict[int, str]) -> go.Figure | None:
    """Left: per round, how long the last client held the round back, coloured by that client.
    Right: per straggler client, the seconds it held rounds back in total and how many rounds.
    With more than STRAGGLER_CLIENTS straggler clients (fleets), both go by device class
    (the client's name less its ``#k``) instead of by client."""
    if stragglers.empty or not (stragglers["held_back_s"] > 0).any():
        return None
    ids = stragglers["straggler"].astype(int)
    names = ids.map(client_names).astype("string").fillna("")
    by_class = ids.nunique() > STRAGGLER_CLIENTS
    who = (device_class(names).replace("", "unknown") if by_class
           else ids.map(lambda c: f"c{c} {client_names.get(int(c), '')}".strip()))
    per_who = stragglers.groupby(who.to_numpy())["held_back_s"].agg(["sum", "count"]).sort_values("sum", ascending=False)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.12)
    fig.update_layout(template="plotly_white", height=max(380, 120 + 24 * len(per_who)), barmode="overlay",
                      margin={"l": 60, "r": 20, "t": 40, "b": 50}, legend=LEGEND)
    for i, w in enumerate(per_who.index):
        colour = PALETTE[i % len(PALETTE)]
        mine = (who == w).to_numpy()
        part = stragglers[mine]
        fig.add_bar(name=str(w), x=part["round"].astype(int), y=part["held_back_s"], marker={"color": colour},
                    legendgroup=str(w), customdata=np.column_stack([part["straggler"].astype(int), names[mine]]),
                    hovertemplate="round %{x}: c%{customdata[0]} %{customdata[1]}<br>held back %{y:.4g} s"
                                  "<extra></extra>", row=1, col=1)
        total, n = float(per_who.loc[w, "sum"]), int(per_who.loc[w, "count"])
        fig.add_bar(name=str(w), y=[str(w)], x=[total], orientation="h", marker={"color": colour}, legendgroup=str(w),
                    showlegend=False, text=[f"{total:.3g} s, last in {n} round{'s' if n != 1 else ''}"],
                    textposition="auto", hovertemplate="%{y}: %{x:.4g} s in all<extra></extra>", row=1, col=2)
    fig.update_xaxes(title_text="round", row=1, col=1)
    fig.update_yaxes(title_text="held the round back by (s)", row=1, col=1)
    fig.update_xaxes(title_text="total held back (s)" + (", by device class" if by_class else ""), row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_layout(showlegend=len(per_who) <= STRAGGLER_CLIENTS)
    return fig
