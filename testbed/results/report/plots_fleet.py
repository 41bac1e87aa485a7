"""The report's figures that scale with the fleet: the device-class lanes that replace the
per-client timeline above analysis.FLEET_CLIENTS clients, and the distributions of client round
time and straggler delay drawn for every run. Each returns None when there is nothing to draw."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from testbed.results.recorder import FAILED_OUTCOMES
from testbed.results.report.analysis import busy_share
from testbed.results.report.plots import WIDTH_IN, round_labels

LANE_BINS = 1000  # time bins across a panel: about one per pixel column of the axes
ZOOM_ROUNDS = 3  # the lanes' second panel stretches the first rounds
LINES_UP_TO = 40  # rounds: with more, the whole-run panel draws no round lines
OUTCOME_COLOURS = {"ok": "#4C72B0", "discarded": "#8C8C8C", "failed": "#C44E52", "oom": "#8172B3"}
BOX_COLOUR = "#4C72B0"


def lanes_figure(times: pd.DataFrame, sizes: pd.Series, rounds: pd.DataFrame) -> Figure | None:
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
            title = f"rounds {int(first['round'].min())}-{int(first['round'].max())}, stretched"
            windows.append((t0, t1, first, title))
    edges = [np.linspace(t0, t1, LANE_BINS + 1) for t0, t1, _, _ in windows]
    grids = [busy_share(times, sizes, e) for e in edges]
    vmax = max(float(g.max()) for g in grids) or 1.0
    fig = Figure(figsize=(WIDTH_IN, 1.2 + (0.9 + 0.5 * len(sizes)) * len(windows)), layout="constrained")
    axes = fig.subplots(len(windows), 1, squeeze=False)[:, 0]
    failed = times[times["outcome"].isin(FAILED_OUTCOMES)]
    for ax, (t0, t1, rnds, title), e, shares in zip(axes, windows, edges, grids):
        image = ax.imshow(shares, aspect="auto", interpolation="nearest", cmap="Blues", vmin=0.0, vmax=vmax,
                          extent=(t0, t1, len(sizes) - 0.5, -0.5))
        _failure_ticks(ax, failed[(failed["end_s"] >= t0) & (failed["end_s"] <= t1)], sizes, e)
        ax.set_xlim(t0, t1 + (t1 - t0) * 0.01)
        round_labels(ax, rnds, t1 - t0, lines=len(rnds) <= LINES_UP_TO + 1)
        ax.set_yticks(range(len(sizes)), [f"{c} ({n:,} clients)" for c, n in sizes.items()])
        ax.set_ylim(len(sizes) - 0.5, -0.5)
        ax.set_title(title, loc="left", fontsize=10, pad=16)
    axes[-1].set_xlabel("simulated time (s)" + ("; dashed lines end rounds" if len(windows) == 1 or
                                                 len(rounds) <= LINES_UP_TO + 1 else ""))
    fig.colorbar(image, ax=list(axes), pad=0.01, fraction=0.03, label="share of the class's clients in a round")
    if len(failed):
        fig.legend(handles=[Line2D([], [], ls="none", marker="|", color="red", mew=1.5,
                                   label=f"failures ({len(failed):,} in all; tick size ~ count)")],
                   loc="outside lower center", frameon=False)
    return fig


def _failure_ticks(ax, failed: pd.DataFrame, sizes: pd.Series, edges: np.ndarray) -> None:
    """Red ticks at the foot of each lane: one per time bin with failures, larger for more."""
    if failed.empty:
        return
    lane = {c: i for i, c in enumerate(sizes.index)}
    counts = failed.groupby(["device_class", np.digitize(failed["end_s"], edges[1:-1])]).size()
    classes, bins = counts.index.get_level_values(0), counts.index.get_level_values(1).to_numpy()
    centres = (edges[bins] + edges[bins + 1]) / 2
    y = pd.Index(classes).map(lane).to_numpy(float) + 0.38
    ax.scatter(centres, y, s=4 + 6 * np.sqrt(counts.to_numpy()), marker="|", color="red", linewidths=1.0,
               alpha=0.8, zorder=3)


def round_time_figure(times: pd.DataFrame, sizes: pd.Series) -> Figure | None:
    """Left: client round time (end - start) per device class, of the clients that did not
    fail: box = p25-p75, line = median, whiskers p5-p95 (annotated with median and count).
    Right: histogram of every client-round's time by outcome."""
    if times.empty or not np.isfinite(times["time_s"]).any():
        return None
    times = times[np.isfinite(times["time_s"])]
    arrived = times[~times["outcome"].isin(FAILED_OUTCOMES)]
    classes = [c for c in sizes.index if (arrived["device_class"] == c).any()] or list(sizes.index)
    fig = Figure(figsize=(WIDTH_IN, max(3.8, 1.6 + 0.45 * len(classes))), layout="constrained")
    by_class, by_outcome = fig.subplots(1, 2, width_ratios=[3, 2])
    groups = arrived.groupby("device_class")["time_s"]
    values = [groups.get_group(c).to_numpy() if c in groups.groups else np.array([]) for c in classes]
    by_class.boxplot(values, orientation="horizontal", whis=(5, 95), showfliers=False, widths=0.6,
                     patch_artist=True, boxprops={"facecolor": "#c6d4ea", "color": BOX_COLOUR},
                     medianprops={"color": "black"}, tick_labels=classes)
    for y, v in enumerate(values, start=1):
        if len(v):
            by_class.annotate(f" {np.median(v):.3g} s, n={len(v):,}", (np.percentile(v, 95), y), va="center",
                              fontsize=8)
    top = float(np.nanmax([np.percentile(v, 95) for v in values if len(v)] or [1.0]))
    by_class.set_xlim(0, top * 1.35)
    by_class.invert_yaxis()
    by_class.set_xlabel("client round time (s), clients that did not fail")
    by_class.grid(axis="x", alpha=0.3)
    bins = np.histogram_bin_edges(times["time_s"], bins=min(60, max(5, len(times) // 5)))
    parts = dict(list(times.groupby("outcome")))
    for outcome in sorted(parts, key=lambda o: (list(OUTCOME_COLOURS).index(o) if o in OUTCOME_COLOURS else 9, o)):
        part = parts[outcome]  # ok first, failures on top of it, dashed
        by_outcome.hist(part["time_s"], bins=bins, histtype="step", lw=1.6, label=f"{outcome} ({len(part):,})",
                        ls="--" if outcome in FAILED_OUTCOMES else "-", color=OUTCOME_COLOURS.get(outcome, "#937860"))
    if len(times) >= 1000:
        by_outcome.set_yscale("log")
    else:
        by_outcome.yaxis.get_major_locator().set_params(integer=True)
    by_outcome.set_xlabel("client round time (s)")
    by_outcome.set_ylabel("client-rounds")
    by_outcome.grid(alpha=0.3)
    by_outcome.legend(fontsize=8)
    return fig


def straggler_delay_figure(delays: pd.DataFrame) -> Figure | None:
    """Left: per round, the last arrival's end minus the median arrival's end. Right: their
    histogram, with the median and the p90 marked."""
    if delays.empty or not np.isfinite(delays["delay_s"]).any():
        return None
    delays = delays[np.isfinite(delays["delay_s"])]
    fig = Figure(figsize=(WIDTH_IN, 3.8), layout="constrained")
    per_round, hist = fig.subplots(1, 2, width_ratios=[3, 2])
    per_round.bar(delays["round"].astype(int), delays["delay_s"], color="#DD8452", width=0.8)
    per_round.set_xlabel("round")
    per_round.set_ylabel("last minus median arrival (s)")
    per_round.xaxis.get_major_locator().set_params(integer=True)
    per_round.grid(axis="y", alpha=0.3)
    values = delays["delay_s"].to_numpy()
    hist.hist(values, bins=min(40, max(5, len(values) // 3)), color="#DD8452", alpha=0.85)
    for q, ls in ((50, "-"), (90, "--")):
        v = float(np.percentile(values, q))
        hist.axvline(v, color="black", ls=ls, lw=1.2, label=f"p{q}: {v:.3g} s")
    hist.yaxis.get_major_locator().set_params(integer=True)
    hist.set_xlabel("straggler delay (s)")
    hist.set_ylabel("rounds")
    hist.grid(alpha=0.3)
    hist.legend(fontsize=8)
    return fig
