"""The report's figures (matplotlib's object API, rendered to PNG on the Agg canvas: no pyplot,
no display). Each returns None when there is nothing to draw, so the page can say so instead."""

from __future__ import annotations

import io
import math

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from testbed.results.metrics import STUDENT_CURVES, TASK_METRICS
from testbed.results.report.analysis import SERVER, device_class

WIDTH_IN = 13.0
DPI = 100
CATEGORY_COLOURS = {
    "compute": "#4C72B0", "failed compute": "#C44E52", "upload": "#DD8452", "download": "#55A868",
    "server work": "#8172B3", "aggregate": "#937860", "other": "#8C8C8C", "waiting": "#E6E6E6",
}
FRAMEWORK_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
KIND_COLOURS = ["#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
STRAGGLER_CLIENTS = 20  # more distinct straggler clients: attribute to device classes
BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def byte_unit(max_bytes: float) -> tuple[float, str]:
    """The largest decimal unit (divisor, name) that keeps max_bytes at 1 or more."""
    return next(((d, name) for d, name in BYTE_UNITS if max_bytes >= d), BYTE_UNITS[-1])


def round_labels(ax, rounds: pd.DataFrame, span_s: float, lines: bool = True) -> None:
    """Dashed lines at round ends (unless ``lines`` is False) and ``r<N>`` labels above the
    axes, skipping labels that would crowd their left neighbour (keeps hundreds of rounds
    readable)."""
    trained = rounds[(rounds["round"] > 0) & rounds["sim_end_s"].notna()]
    top = blended_transform_factory(ax.transData, ax.transAxes)
    last_label_s = -math.inf
    for rnd, start_s, end_s in zip(trained["round"], trained["sim_start_s"], trained["sim_end_s"]):
        if lines:
            ax.axvline(end_s, color="#555555", lw=0.7, ls="--", zorder=0)
        mid_s = (start_s + end_s) / 2 if pd.notna(start_s) else end_s
        if mid_s - last_label_s >= 0.035 * span_s:
            ax.text(mid_s, 1.01, f"r{rnd}", transform=top, ha="center", va="bottom", fontsize=9)
            last_label_s = mid_s


def timeline_figure(spans: pd.DataFrame, marks: pd.DataFrame, rounds: pd.DataFrame,
                    client_names: dict[int, str]) -> Figure | None:
    """Gantt chart: one row per client (and the server), x = simulated seconds; activities
    coloured by category, waiting light grey, failures as red crosses with their cause."""
    if spans.empty:
        return None
    ids = sorted(set(spans["client"].astype(int)) | set(client_names) | set(marks["client"].astype(int)))
    row = {c: i for i, c in enumerate(ids)}
    labels = ["server" if c == SERVER else f"c{c} {client_names.get(c, '')}".strip() for c in ids]
    fig = Figure(figsize=(WIDTH_IN, 1.6 + 0.42 * len(ids)), layout="constrained")
    ax = fig.add_subplot()
    handles = []
    for category, colour in CATEGORY_COLOURS.items():
        part = spans[spans["category"] == category]
        if part.empty:
            continue
        ax.barh([row[int(c)] for c in part["client"]], part["end_s"] - part["start_s"], left=part["start_s"],
                height=0.62, color=colour, zorder=1 if category == "waiting" else 2)
        handles.append(Patch(color=colour, label=category))
    if not marks.empty:
        y = [row[int(c)] for c in marks["client"]]
        ax.plot(marks["t_s"], y, ls="none", marker="x", color="red", ms=11, mew=2.5, zorder=3)
        for t_s, y_row, cause in zip(marks["t_s"], y, marks["cause"]):
            ax.annotate(cause, (t_s, y_row), xytext=(7, 5), textcoords="offset points", color="red", fontsize=8,
                        bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 0.5})
        handles.append(Line2D([], [], ls="none", marker="x", color="red", mew=2.5, label="failure"))
    last_round_end_s = rounds["sim_end_s"].max()
    span_s = max(float(spans["end_s"].max()), float(last_round_end_s) if pd.notna(last_round_end_s) else 0.0) or 1.0
    ax.set_xlim(0, span_s * 1.01)
    round_labels(ax, rounds, span_s)
    ax.set_yticks(range(len(ids)), labels)
    ax.set_ylim(len(ids) - 0.5, -0.5)
    ax.set_xlabel("simulated time (s); dashed lines end rounds")
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    return fig


def accuracy_figure(curves: dict[str, list[pd.DataFrame]]) -> Figure | None:
    """Accuracy versus simulated wall-clock (metric_figure of ``accuracy``)."""
    return metric_figure(curves, "accuracy")


def metric_figure(curves: dict[str, list[pd.DataFrame]], metric: str) -> Figure | None:
    """A task metric (a rounds.csv column: accuracy, perplexity, rouge_l, exact_match) versus
    simulated wall-clock: one colour per framework; several seeds are thin lines; the students'
    (kd: ``student_accuracy``, ``student_perplexity``) dashed. Perplexity on a log axis when it
    spans a factor of 10 or more."""
    fig = Figure(figsize=(WIDTH_IN * 0.75, 4.8), layout="constrained")
    ax = fig.add_subplot()
    drawn: list[float] = []
    student = STUDENT_CURVES.get(metric)
    for i, (name, seeds) in enumerate(curves.items()):
        colour = FRAMEWORK_COLOURS[i % len(FRAMEWORK_COLOURS)]
        # earlier frameworks wider and with bigger markers, so identical curves stay visible
        under = len(curves) - 1 - i
        single = len(seeds) == 1  # thin seed lines go on top so thick ones cannot hide them
        lw, ms, zorder = (1.6 + 1.1 * under, 4.5 + 1.5 * under, 2) if single else (1.0, 3.0, 3)
        suffix = "" if single else f" ({len(seeds)} seeds)"
        for j, rounds in enumerate(seeds):
            for column, ls, label in ((metric, "-", name + suffix), (student, "--", f"{name} student")):
                if column is None or column not in rounds or rounds[column].isna().all():
                    continue
                pts = rounds[rounds[column].notna()]
                ax.plot(pts["sim_end_s"], pts[column], ls=ls, lw=lw, marker=MARKERS[i % len(MARKERS)], ms=ms,
                        color=colour, zorder=zorder, label=label if j == 0 else None)
                drawn += [float(v) for v in pts[column]]
    if not drawn:
        return None
    ax.set_xlabel("simulated wall-clock (s)")
    known = TASK_METRICS.get(metric)
    better = f" ({'higher' if known.higher_is_better else 'lower'} is better)" if known and metric != "accuracy" else ""
    ax.set_ylabel((known.display if known else metric) + better)
    if metric.endswith("perplexity") and min(drawn) > 0 and max(drawn) >= 10 * min(drawn):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def bytes_figure(tables: dict[str, pd.DataFrame]) -> Figure | None:
    """Payload bytes per exchange kind: one bar per kind for a single run, one stacked bar per
    framework (segments = kinds) for several."""
    tables = {name: t for name, t in tables.items() if t["payload_bytes"].sum() > 0}
    if not tables:
        return None
    totals = {name: float(t["payload_bytes"].sum()) for name, t in tables.items()}
    if len(tables) == 1:
        table = next(iter(tables.values()))
        return _bars_figure(list(table["kind"]), [float(b) for b in table["payload_bytes"]])
    kinds = sorted({k for t in tables.values() for k in t["kind"]})
    divisor, unit = byte_unit(max(totals.values()))
    fig = Figure(figsize=(WIDTH_IN * 0.75, 1.4 + 0.55 * len(tables)), layout="constrained")
    ax = fig.add_subplot()
    names = list(tables)
    left = [0.0] * len(names)
    for k, kind in enumerate(kinds):
        values = [float(tables[n].set_index("kind")["payload_bytes"].get(kind, 0)) / divisor for n in names]
        ax.barh(names, values, left=left, color=KIND_COLOURS[k % len(KIND_COLOURS)], label=kind)
        left = [a + b for a, b in zip(left, values)]
    for y, name in enumerate(names):
        ax.annotate(f" {totals[name] / divisor:.3g} {unit}", (left[y], y), va="center", fontsize=9)
    ax.set_xlim(0, max(left) * 1.15)
    ax.invert_yaxis()
    ax.set_xlabel(f"payload ({unit}), whole run")
    fig.legend(loc="outside lower center", ncols=len(kinds), frameon=False)
    return fig


def _bars_figure(kinds: list[str], payload_bytes: list[float]) -> Figure:
    """One horizontal bar per exchange kind, each labelled with its size."""
    divisor, unit = byte_unit(max(payload_bytes))
    fig = Figure(figsize=(WIDTH_IN * 0.75, 1.2 + 0.45 * len(kinds)), layout="constrained")
    ax = fig.add_subplot()
    values = [b / divisor for b in payload_bytes]
    ax.barh(kinds, values, color=[CATEGORY_COLOURS["upload" if k.endswith("_up") else "download"] for k in kinds])
    for y, v in enumerate(values):
        ax.annotate(f" {v:.3g} {unit}", (v, y), va="center", fontsize=9)
    ax.set_xlim(0, max(values) * 1.15)
    ax.invert_yaxis()
    ax.set_xlabel(f"payload ({unit}), whole run")
    return fig


def straggler_figure(stragglers: pd.DataFrame, client_names: dict[int, str]) -> Figure | None:
    """Left: per round, how long the last client held the round back, coloured by that client.
    Right: per straggler client, the seconds it held rounds back in total and how many rounds.
    With more than STRAGGLER_CLIENTS straggler clients (fleets), both go by device class
    (the client's name less its ``#k``) instead of by client."""
    if stragglers.empty or not (stragglers["held_back_s"] > 0).any():
        return None
    ids = stragglers["straggler"].astype(int)
    names = ids.map(client_names).astype("string").fillna("")
    by_class = ids.nunique() > STRAGGLER_CLIENTS
    who = device_class(names).replace("", "unknown") if by_class else ids
    per_who = stragglers.groupby(who.to_numpy())["held_back_s"].agg(["sum", "count"])
    palette = colormaps["tab10" if len(per_who) <= 10 else "tab20"].colors
    colour = {w: palette[i % len(palette)] for i, w in enumerate(per_who.index)}
    fig = Figure(figsize=(WIDTH_IN, max(3.8, 1.2 + 0.3 * len(per_who))), layout="constrained")
    by_round, by_who = fig.subplots(1, 2, width_ratios=[5, 2])
    rounds = stragglers["round"].astype(int)
    by_round.bar(rounds, stragglers["held_back_s"], color=[colour[w] for w in who])
    if len(stragglers) <= 40:
        for rnd, held_s, client in zip(rounds, stragglers["held_back_s"], stragglers["straggler"]):
            by_round.annotate(f"c{client}", (rnd, held_s), xytext=(0, 2), textcoords="offset points",
                              ha="center", fontsize=8)
    by_round.set_xlabel("round")
    by_round.set_ylabel("held the round back by (s)")
    by_round.xaxis.get_major_locator().set_params(integer=True)
    by_round.grid(axis="y", alpha=0.3)
    labels = (list(per_who.index) if by_class else
              [f"c{c} {client_names.get(int(c), '')}".strip() for c in per_who.index])
    by_who.barh(labels, per_who["sum"], height=0.6, color=[colour[w] for w in per_who.index])
    for y, (total_s, n) in enumerate(zip(per_who["sum"], per_who["count"])):
        rounds_txt = "1 round" if n == 1 else f"{n} rounds"
        by_who.annotate(f" {total_s:.3g} s, last in {rounds_txt}", (total_s, y), va="center", fontsize=8)
    by_who.set_xlim(0, per_who["sum"].max() * 2.3)
    by_who.invert_yaxis()
    by_who.set_xlabel("total held back (s)" + (", by device class" if by_class else ""))
    return fig
