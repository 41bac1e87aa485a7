"""Assemble the report page: ``<folder>/report/index.html`` with every plot written next to it
as a PNG and embedded in it (base64), so the page also works when copied alone."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from testbed.results.metrics import GENERATIVE_CURVES, TASK_METRICS, generative_values, is_generative, task_metrics
from testbed.results.report import analysis, plots
from testbed.results.report.load import CompareData, RunData

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
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1360px;padding:0 16px;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:36px}
h3{margin-top:26px}.meta,.note,figcaption{color:#666;font-size:.9em}nav a{margin-right:14px}
img{max-width:100%;border:1px solid #eee}figure{margin:8px 0}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}th,td{padding:3px 8px;border-bottom:1px solid #e4e4e4;
text-align:right;white-space:nowrap}th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
table.facts th{text-align:left}table.facts td{text-align:left}
.scroll{overflow:auto;max-height:520px}.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}
"""


def _cell(value: Any) -> str:
    """A table cell's text: whole floats as integers, others to 4 significant digits (1 decimal
    from 1000 on), NA empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _table(df: pd.DataFrame) -> str:
    """An escaped HTML table of a DataFrame, scrollable when large."""
    cells = df.map(_cell) if len(df) else df
    return f'<div class="scroll">{cells.to_html(index=False, border=0, escape=True)}</div>'


def _slug(name: str) -> str:
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
    if "device" in run.client_rounds:
        return {int(c): str(d) for c, d in zip(run.client_rounds["client"], run.client_rounds["device"])}
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


def _facts(run: RunData) -> str:
    """Key facts of a run from summary.json and rounds.csv, as a two-column table."""
    s = task_summary(run)
    rows = [(label, _cell(s.get(key))) for label, key in FACTS if s.get(key) is not None]
    if isinstance(s.get("backend"), dict):
        b = s["backend"]
        rows.append(("backend", f"{b.get('kind')}, time {b.get('time')}, {b.get('parallel_clients')} in parallel, "
                                f"cgroups {'enforced' if b.get('cgroups_enforced') else 'not enforced'}"))
    trained = run.rounds[run.rounds["round"] > 0]
    rows.append(("rounds in rounds.csv", str(len(trained))))
    if len(run.rounds):
        rows.append(("last round end (simulated s)", _cell(float(run.rounds["sim_end_s"].max()))))
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


def scenario_section(run: RunData, level: int) -> str:
    """Facts, the clients, versions and the resolved scenario of one run."""
    parts = [f"<h{level}>Scenario</h{level}>", _facts(run)]
    if run.summary.get("clients"):
        clients = pd.json_normalize(run.summary["clients"]).dropna(axis=1, how="all")
        parts += [f"<h{level + 1}>Clients</h{level + 1}>", _table(clients)]
    if isinstance(run.summary.get("versions"), dict):
        versions = " · ".join(f"{k} {v}" for k, v in run.summary["versions"].items())
        parts.append(f'<p class="meta">versions: {html.escape(versions)}</p>')
    if run.scenario_yaml:
        parts.append(f"<details><summary>scenario.yaml</summary><pre>{html.escape(run.scenario_yaml)}</pre></details>")
    return "\n".join(parts)


def timeline_section(run: RunData, writer: PageWriter, key: str, level: int) -> str:
    """The per-client Gantt chart of one run."""
    spans = analysis.timeline_spans(run.events, run.rounds, run.client_rounds)
    marks = analysis.failures(run.client_rounds)
    fig = plots.timeline_figure(spans, marks, run.rounds, client_names(run))
    caption = ("Per round and client: compute, uploads (*_up), downloads (*_down), server work done for the "
               "client, and waiting (light grey: gaps between its activities and from its end to the round's "
               "end). Red crosses: failures, with their cause.")
    return f"<h{level}>Per-client timeline</h{level}>" + writer.figure(f"timeline{key}", fig, caption, "No events.")


def straggler_section(run: RunData, writer: PageWriter, key: str, level: int) -> str:
    """Which client finished each round last and by how long it held the round back."""
    names = client_names(run)
    table = analysis.straggler_attribution(run.rounds, run.client_rounds)
    fig = plots.straggler_figure(table, names)
    caption = ("Held back = the straggler's end minus the second-latest arrived client's end (0 s if it arrived "
               "alone); right: each straggler's total over the run.")
    note = ("No round had a straggler." if table.empty else
            "No straggler held a round back (every round had one arrived client or a tie).")
    table.insert(2, "straggler_name", [names.get(int(c), "") for c in table["straggler"]])
    return (f"<h{level}>Straggler attribution</h{level}>" + writer.figure(f"stragglers{key}", fig, caption, note)
            + (_table(table) if len(table) else ""))


def rounds_section(run: RunData, level: int) -> str:
    """The rounds.csv table."""
    return f"<h{level}>Rounds (rounds.csv)</h{level}>" + _table(run.rounds)


# what each task metric's figure shows (after "... after each evaluated round")
CAPTIONS = {
    "accuracy": "Accuracy",
    "perplexity": "Perplexity (exp of the mean negative log-likelihood per scored token: the response's for "
                  "instruction tasks, every token for language modelling; lower is better)",
    "rouge_l": "ROUGE-L (F-measure of the longest common word subsequence of the greedy generations and the "
               "references; higher is better)",
    "exact_match": "Exact match (share of greedy generations equal to their reference; higher is better)",
}


def plotted_metrics(runs: dict[str, list[RunData]]) -> list[str]:
    """The task metrics drawn against simulated wall-clock: accuracy for classification runs;
    for generative runs those of perplexity, rouge_l and exact_match they recorded (perplexity
    at least, to say that it is missing)."""
    all_runs = [r for seeds in runs.values() for r in seeds]
    if not any(is_generative(r.rounds, r.summary) for r in all_runs):
        return ["accuracy"]
    present = {m for r in all_runs for m in task_metrics(r.rounds)}
    return [m for m in ("accuracy", *GENERATIVE_CURVES) if m in present] or ["perplexity"]


def metrics_sections(runs: dict[str, list[RunData]], writer: PageWriter) -> list[tuple[str, str]]:
    """(anchor, html) per task metric: the metric versus simulated wall-clock, one line per
    framework (thin lines per seed)."""
    curves = {name: [r.rounds for r in seeds] for name, seeds in runs.items()}
    sections = []
    for metric in plotted_metrics(runs):
        display = TASK_METRICS[metric].display
        title = display[0].upper() + display[1:]
        caption = (f"{CAPTIONS[metric]} after each evaluated round at its simulated end time (round 0 = before "
                   "training, t = 0).")
        sections.append((metric, f"<h2 id={metric}>{html.escape(title)} vs simulated wall-clock</h2>" + writer.figure(
            metric, plots.metric_figure(curves, metric), caption, f"No {display} was recorded.")))
    return sections


def bytes_section(runs: dict[str, list[RunData]], writer: PageWriter) -> str:
    """Payload bytes per exchange kind (first seed of each framework), plot and table."""
    tables = {name: analysis.bytes_by_kind(seeds[0].events) for name, seeds in runs.items()}
    fig = plots.bytes_figure(tables)
    caption = "Sum of payload_bytes per exchange kind over the whole run (events.csv)."
    rows = pd.concat([t.assign(framework=name) for name, t in tables.items()], ignore_index=True)
    if len(runs) == 1:
        rows = rows.drop(columns="framework")
    return ("<h2 id=bytes>Bytes by exchange kind</h2>" + writer.figure("bytes", fig, caption, "No transfers.")
            + (_table(rows) if len(rows) else ""))


def run_page(run: RunData, writer: PageWriter) -> tuple[str, str]:
    """(title, body) of the page for one run folder."""
    runs = {run_label(run): [run]}
    metrics = metrics_sections(runs, writer)
    body = "\n".join([
        "<section id=scenario>" + scenario_section(run, 2) + "</section>",
        "<section id=timeline>" + timeline_section(run, writer, "", 2) + "</section>",
        *("<section>" + section + "</section>" for _, section in metrics),
        "<section>" + bytes_section(runs, writer) + "</section>",
        "<section id=stragglers>" + straggler_section(run, writer, "", 2) + "</section>",
        "<section id=rounds>" + rounds_section(run, 2) + "</section>",
    ])
    nav = [("scenario", "scenario"), ("timeline", "timeline"), *_metric_links(metrics), ("bytes", "bytes"),
           ("stragglers", "stragglers"), ("rounds", "rounds")]
    return f"run {run.path.name} ({run_label(run)})", _nav(nav) + body


def _metric_links(sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """In-page links to the task metrics' sections."""
    return [(metric, TASK_METRICS[metric].display) for metric, _ in sections]


def _runs_table(data: CompareData) -> pd.DataFrame:
    """One row per framework: seeds found and the first seed's status and headline numbers
    (final accuracy; for a generative run final and initial perplexity and ROUGE-L)."""
    rows = []
    for name, seeds in data.runs.items():
        run, summary = seeds[0], task_summary(seeds[0])
        task = (("final_perplexity", "initial_perplexity", "final_rouge_l", "initial_rouge_l")
                if is_generative(run.rounds, run.summary) else ("final_accuracy",))
        rows.append({"framework": name, "runs": len(seeds), "folder": str(run.path.relative_to(data.path)),
                     "status": summary.get("status"), **{key: summary.get(key) for key in task},
                     "sim_wall_clock_s": summary.get("sim_wall_clock_s")})
    return pd.DataFrame(rows)


def compare_page(data: CompareData, writer: PageWriter) -> tuple[str, str]:
    """(title, body) of the page for a compare folder."""
    parts = ["<section id=comparison><h2>Comparison</h2>"]
    if data.comparison is not None:
        parts.append("<p>comparison.csv</p>" + _table(data.comparison))
    parts += ["<p>Run folders (timelines, stragglers and bytes use the first seed of each)</p>",
              _table(_runs_table(data))]
    parts += [f'<p class="bad">Not rendered: {html.escape(why)}</p>' for why in data.unreadable.values()]
    metrics = metrics_sections(data.runs, writer)
    parts += ["</section>", *("<section>" + section + "</section>" for _, section in metrics),
              "<section>" + bytes_section(data.runs, writer) + "</section>"]
    nav = [("comparison", "comparison"), *_metric_links(metrics), ("bytes", "bytes")]
    for name, seeds in data.runs.items():
        run, key = seeds[0], f"-{_slug(name)}"
        nav.append((f"fw{key}", name))
        parts += [f"<section id=fw{key}><h2>{html.escape(name)}</h2>",
                  f'<p class="meta">{html.escape(str(run.path))}</p>', scenario_section(run, 3),
                  timeline_section(run, writer, key, 3), straggler_section(run, writer, key, 3),
                  rounds_section(run, 3), "</section>"]
    return f"comparison {data.path.name}", _nav(nav) + "\n".join(parts)


def _nav(links: list[tuple[str, str]]) -> str:
    """In-page links to the sections."""
    return "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in links) + "</nav>"


def write_page(source: RunData | CompareData, out_dir: Path) -> Path:
    """Render the source's page and plots into out_dir; returns index.html's path."""
    writer = PageWriter(out_dir)
    title, body = run_page(source, writer) if isinstance(source, RunData) else compare_page(source, writer)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"{source.path.resolve()} · generated {generated}"
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>testbed report: {html.escape(title)}</h1>"
            f'<p class="meta">{html.escape(meta)}</p>{body}</body></html>')
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
