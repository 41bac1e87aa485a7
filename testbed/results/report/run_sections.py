"""The sections of one run on the page: scenario, timeline (one row per client, or device-class
lanes for fleets of more than analysis.FLEET_CLIENTS clients), client round times, memory and
energy per client, straggler attribution, straggler delay and the rounds table."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd

from testbed.results.report import analysis, plots, plots_clients, plots_fleet, resources
from testbed.results.report.blocks import PageWriter, cell, client_names, table, task_summary
from testbed.results.report.load import RunData

FACTS = (
    ("scenario", "scenario"), ("framework", "framework"), ("model", "model"), ("status", "status"),
    ("seed", "seed"), ("rounds completed", "rounds_completed"), ("initial accuracy", "initial_accuracy"),
    ("final accuracy", "final_accuracy"), ("initial perplexity", "initial_perplexity"),
    ("final perplexity", "final_perplexity"), ("initial ROUGE-L", "initial_rouge_l"),
    ("final ROUGE-L", "final_rouge_l"), ("final exact match", "final_exact_match"),
    ("final eval loss", "final_eval_loss"),
    ("simulated wall-clock (s)", "sim_wall_clock_s"), ("host wall-clock (s)", "host_wall_s"),
    ("started at", "started_at"), ("git commit", "git_commit"), ("replayed compute from", "replayed_compute_from"),
)
MAX_CLASSES = 24  # lanes and boxes: the largest device classes, the rest as one
SELECTED_SHOWN = 8  # client ids of rounds.csv's `selected` shown before "…"


@dataclass
class Fleet:
    """A run's clients by device class, and its client-rounds' spans (analysis.client_round_times)."""

    names: dict[int, str]
    classes: pd.Series  # client id -> device class
    times: pd.DataFrame
    sizes: pd.Series  # device class -> clients, largest first

    @property
    def clients(self) -> int:
        """How many clients the run had (summary.json's, else those seen in its tables)."""
        return max(len(self.names), int(self.times["client"].nunique()) if len(self.times) else 0)

    @property
    def lanes(self) -> bool:
        """Whether the timeline goes by device class."""
        return self.clients > analysis.FLEET_CLIENTS


def fleet(run: RunData) -> Fleet:
    """The run's Fleet, computed once for its sections."""
    names = client_names(run)
    classes = analysis.device_class(pd.Series(names, dtype="object")) if names else pd.Series(dtype="string")
    times = analysis.client_round_times(run.client_rounds, run.events, classes)
    times, sizes = analysis.fewer_classes(times, analysis.class_sizes(classes, times), MAX_CLASSES)
    return Fleet(names, classes, times, sizes)


def _facts(run: RunData) -> str:
    """Key facts of a run from summary.json and rounds.csv, as a two-column table."""
    s = task_summary(run)
    rows = [(label, cell(s.get(key))) for label, key in FACTS if s.get(key) is not None]
    if isinstance(s.get("backend"), dict):
        b = s["backend"]
        backend = (f"{b.get('kind')}, time {b.get('time')}, {b.get('parallel_clients')} in parallel, "
                   f"cgroups {'enforced' if b.get('cgroups_enforced') else 'not enforced'}")
        rows.append(("backend", backend))
    trained = run.rounds[run.rounds["round"] > 0]
    rows.append(("rounds in rounds.csv", str(len(trained))))
    if len(run.rounds):
        rows.append(("last round end (simulated s)", cell(float(run.rounds["sim_end_s"].max()))))
    if not run.summary:
        rows.insert(0, ("summary.json", "missing"))
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td{_status_class(k, v)}>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _status_class(key: str, value: str) -> str:
    """A class attribute highlighting the run status."""
    if key != "status":
        return ""
    return ' class="ok"' if value == "completed" else ' class="bad"'


def _clients_table(clients: list[dict]) -> tuple[str, str]:
    """(heading, table) of summary.json's clients: one row per client, or for a fleet one row
    per device and link with its count."""
    df = pd.json_normalize(clients).dropna(axis=1, how="all")
    keys = [k for k in ("device", "link.name") if k in df]
    if len(df) <= analysis.FLEET_CLIENTS or not keys:
        return "Clients", table(df, "summary.json")
    agg = {"clients": ("client", "size") if "client" in df else (keys[0], "size")}
    if "memory_budget_mb" in df:
        agg["memory_budget_mb"] = ("memory_budget_mb", "median")
    grouped = df.groupby(keys, dropna=False).agg(**agg).reset_index().sort_values("clients", ascending=False)
    grouped = grouped.rename(columns={"link.name": "link"})
    by = " and ".join(k.removesuffix(".name") for k in keys)
    return f"Clients ({len(df):,}, by {by})", table(grouped, "summary.json")


def scenario_section(run: RunData, level: int) -> str:
    """Facts, the clients, versions and the resolved scenario of one run."""
    parts = [f"<h{level}>Scenario</h{level}>", _facts(run)]
    if run.summary.get("clients"):
        heading, clients = _clients_table(run.summary["clients"])
        parts += [f"<h{level + 1}>{html.escape(heading)}</h{level + 1}>", clients]
    if isinstance(run.summary.get("versions"), dict):
        versions = " · ".join(f"{k} {v}" for k, v in run.summary["versions"].items())
        parts.append(f'<p class="meta">versions: {html.escape(versions)}</p>')
    if run.scenario_yaml:
        parts.append(f"<details><summary>scenario.yaml</summary><pre>{html.escape(run.scenario_yaml)}</pre></details>")
    return "\n".join(parts)


def timeline_section(run: RunData, view: Fleet, writer: PageWriter, key: str, level: int) -> str:
    """The per-client Gantt chart of one run, or for a fleet its device-class lanes."""
    if view.lanes:
        fig = plots_fleet.lanes_figure(view.times, view.sizes, run.rounds)
        caption = (f"{view.clients:,} clients, one lane per device class (the device name less its #k). Colour: "
                   "the share of the class's clients inside a client-round (from the start of its download to the "
                   "end of its upload, or its failure), averaged over each of "
                   f"{plots_fleet.LANE_BINS} time bins; the scale runs to the highest share seen. Red ticks: "
                   "failures of the class's clients in that bin (larger for more). Top: the whole run; below it, "
                   f"in runs of more than {2 * plots_fleet.ZOOM_ROUNDS} rounds, the first "
                   f"{plots_fleet.ZOOM_ROUNDS} rounds stretched.")
        return (f"<h{level}>Timeline by device class</h{level}>"
                + writer.figure(f"timeline{key}", fig, caption, "No client-rounds."))
    spans = analysis.timeline_spans(run.events, run.rounds, run.client_rounds)
    marks = analysis.failures(run.client_rounds)
    fig = plots.timeline_figure(spans, marks, run.rounds, view.names)
    caption = ("Per round and client: compute, uploads (*_up), downloads (*_down), server work done for the "
               "client, and waiting (light grey: gaps between its activities and from its end to the round's "
               "end). Red crosses: failures, with their cause. Hover a bar for its client, kind, round, bytes and "
               "device seconds; drag to zoom, double-click to reset.")
    if len(spans) > plots.MAX_SPANS:
        caption += (f" {len(spans):,} activities: only the first rounds' (up to {plots.MAX_SPANS:,}) are drawn; "
                    "the whole run is in events.csv.")
    return f"<h{level}>Per-client timeline</h{level}>" + writer.figure(f"timeline{key}", fig, caption, "No events.")


def round_time_section(view: Fleet, writer: PageWriter, key: str, level: int) -> str:
    """The distribution of client round time, by device class and by outcome."""
    fig = plots_fleet.round_time_figure(view.times, view.sizes)
    caption = ("Client round time: a client-round's sim_end_s minus its sim_start_s (client_rounds.csv: from the "
               "start of its download to the end of its upload, or to its failure), in seconds. Left: per device "
               "class, clients that did not fail (box p25-p75, line median, whiskers p5-p95). Right: every "
               "client-round by outcome.")
    return (f"<h{level} id=round-times{key}>Client round time</h{level}>"
            + writer.figure(f"round_times{key}", fig, caption, "No client-round has a start and an end."))


def straggler_delay_section(run: RunData, writer: PageWriter, key: str, level: int) -> str:
    """The distribution of straggler delay per round."""
    delays = analysis.straggler_delays(run.client_rounds)
    fig = plots_fleet.straggler_delay_figure(delays)
    caption = ("Straggler delay: per round, the last arrival's end minus the median arrival's end (clients that "
               "did not fail; client_rounds.csv sim_end_s), in seconds: how long the round waited for its slowest "
               "clients after the typical one had arrived.")
    return (f"<h{level} id=straggler-delay{key}>Straggler delay</h{level}>"
            + writer.figure(f"straggler_delay{key}", fig, caption, "No round had an arrival."))


def _rank(view: Fleet) -> dict[str, int]:
    """Device class -> its place among the lanes (largest first)."""
    return {str(c): i for i, c in enumerate(view.sizes.index)}


def memory_section(run: RunData, view: Fleet, writer: PageWriter, key: str, level: int) -> str:
    """Each client's peak memory against its budget (per device class for fleets)."""
    memory = resources.memory_by_client(run.client_rounds, view.names)
    if view.lanes:  # the lanes' order: largest device class first
        memory = memory.sort_values("device_class", key=lambda c: c.map(_rank(view)), kind="stable")
    fig = plots_clients.memory_figure(memory, view.lanes)
    what = ("per device class, a box of its clients' peaks (p25-p75, median, whiskers p5-p95) and a tick at its "
            "median budget" if view.lanes else "per client, its highest peak_rss_mb over its rounds (red: over its "
            "budget in some round) and a tick at its memory_budget_mb")
    over = int(memory["over_rounds"].sum()) if len(memory) else 0
    caption = f"Peak resident memory (client_rounds.csv): {what}. Client-rounds over budget: {over:,}."
    return (f"<h{level} id=memory{key}>Memory per client</h{level}>"
            + writer.figure(f"memory{key}", fig, caption, "No peak memory was recorded (peak_rss_mb is empty: "
                            "compute predicted or not measured by this backend)."))


def energy_section(run: RunData, view: Fleet, writer: PageWriter, key: str, level: int) -> str:
    """Energy per client over the run, compute and radio (per device class for fleets)."""
    energy = resources.energy_by(run.client_rounds, view.names, view.lanes)
    if view.lanes:
        energy = energy.sort_values("who", key=lambda c: c.map(_rank(view)), kind="stable")
    fig = plots_clients.energy_figure(energy, view.lanes)
    gaps = resources.energy_gaps(run.client_rounds)
    caption = ("Energy over the run (client_rounds.csv energy_j = compute_energy_j + radio_energy_j), "
               + ("mean per client of each device class. " if view.lanes else "per client. ") + gaps)
    note = "No energy figure was recorded. " + gaps
    return (f"<h{level} id=energy{key}>Energy per client</h{level}>"
            + writer.figure(f"energy{key}", fig, caption.strip(), note.strip()))


def straggler_section(run: RunData, view: Fleet, writer: PageWriter, key: str, level: int) -> str:
    """Which client finished each round last and by how long it held the round back."""
    names = view.names
    stragglers = analysis.straggler_attribution(run.rounds, run.client_rounds)
    fig = plots.straggler_figure(stragglers, names)
    by_class = stragglers["straggler"].nunique() > plots.STRAGGLER_CLIENTS
    caption = ("Held back = the straggler's end minus the second-latest arrived client's end (0 s if it arrived "
               "alone); right: each straggler's total over the run"
               + (", summed by device class (bars coloured by class)." if by_class else "."))
    note = ("No round had a straggler." if stragglers.empty else
            "No straggler held a round back (every round had one arrived client or a tie).")
    stragglers.insert(2, "straggler_name", stragglers["straggler"].astype(int).map(names).fillna("")
                      if len(stragglers) else [])
    return (f"<h{level}>Straggler attribution</h{level}>" + writer.figure(f"stragglers{key}", fig, caption, note)
            + (table(stragglers) if len(stragglers) else ""))


def _short_selected(rounds: pd.DataFrame) -> pd.DataFrame:
    """rounds.csv with a long `selected` (a fleet's round selects hundreds of clients) shown as
    its count and first ids."""
    if "selected" not in rounds or not len(rounds):
        return rounds
    sel = rounds["selected"].astype("string").fillna("")
    long = (sel.str.len() > 60).to_numpy()
    if not long.any():
        return rounds
    count = sel.str.count(r"\S+").astype(str)
    head = sel.str.split().str[:SELECTED_SHOWN].str.join(" ")
    return rounds.assign(selected=np.where(long, count + " clients: " + head + " …", sel))


def rounds_section(run: RunData, level: int) -> str:
    """The rounds.csv table."""
    return f"<h{level}>Rounds (rounds.csv)</h{level}>" + table(_short_selected(run.rounds), "rounds.csv")
