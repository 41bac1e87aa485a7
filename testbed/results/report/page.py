"""Assemble the report page: ``<folder>/report/index.html``, one self-contained file: plotly.js
inlined once in its head, every figure a <div> with its data, so the page opens with no network
and still works when copied alone."""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from testbed.results.metrics import GENERATIVE_CURVES, TASK_METRICS, is_generative, task_metrics
from testbed.results.report import analysis, plots
from testbed.results.report.blocks import PageWriter, run_label, slug, table, task_summary
from testbed.results.report.grid import grid_section
from testbed.results.report.load import CompareData, RunData, StressData
from testbed.results.report.run_sections import (
    energy_section,
    fleet,
    memory_section,
    round_time_section,
    rounds_section,
    scenario_section,
    straggler_delay_section,
    straggler_section,
    timeline_section,
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
.scroll{overflow:auto;max-height:520px}.plotly-graph-div{border:1px solid #eee}.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}
"""


# what each task metric's figure shows (after "... after each evaluated round")
PREDICTED = re.compile(r"\bcompute:\s*['\"]?predicted\b")  # in the resolved scenario.yaml
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
    predicted = any(PREDICTED.search(r.scenario_yaml) for seeds in runs.values() for r in seeds)
    why = " Not measured: emulation.compute: predicted trains nothing." if predicted else ""
    sections = []
    for metric in plotted_metrics(runs):
        display = TASK_METRICS[metric].display
        title = display[0].upper() + display[1:]
        caption = (f"{CAPTIONS[metric]} after each evaluated round at its simulated end time (round 0 = before "
                   "training, t = 0).")
        sections.append((metric, f"<h2 id={metric}>{html.escape(title)} vs simulated wall-clock</h2>" + writer.figure(
            metric, plots.metric_figure(curves, metric), caption, f"No {display} was recorded.{why}")))
    return sections


def loss_section(runs: dict[str, list[RunData]], writer: PageWriter) -> str:
    """rounds.csv's train and eval loss versus simulated wall-clock."""
    fig = plots.loss_figure({name: [r.rounds for r in seeds] for name, seeds in runs.items()})
    caption = ("rounds.csv train_loss (solid: the round's mean over its clients) and eval_loss (dotted) at each "
               "round's simulated end time.")
    return "<h2 id=loss>Loss vs simulated wall-clock</h2>" + writer.figure("loss", fig, caption, "No loss was recorded.")


def bytes_section(runs: dict[str, list[RunData]], writer: PageWriter) -> str:
    """Payload bytes per exchange kind (first seed of each framework), plot and table."""
    tables = {name: analysis.bytes_by_kind(seeds[0].events) for name, seeds in runs.items()}
    fig = plots.bytes_figure(tables)
    caption = "Sum of payload_bytes per exchange kind over the whole run (events.csv)."
    rows = pd.concat([t.assign(framework=name) for name, t in tables.items()], ignore_index=True)
    if len(runs) == 1:
        rows = rows.drop(columns="framework")
    return ("<h2 id=bytes>Bytes by exchange kind</h2>" + writer.figure("bytes", fig, caption, "No transfers.")
            + (table(rows) if len(rows) else ""))


def run_page(run: RunData, writer: PageWriter) -> tuple[str, str]:
    """(title, body) of the page for one run folder."""
    runs = {run_label(run): [run]}
    metrics = metrics_sections(runs, writer)
    view = fleet(run)
    body = "\n".join([
        "<section id=scenario>" + scenario_section(run, 2) + "</section>",
        "<section id=timeline>" + timeline_section(run, view, writer, "", 2) + "</section>",
        "<section>" + round_time_section(view, writer, "", 2) + "</section>",
        *("<section>" + section + "</section>" for _, section in metrics),
        "<section>" + loss_section(runs, writer) + "</section>",
        "<section>" + memory_section(run, view, writer, "", 2) + "</section>",
        "<section>" + energy_section(run, view, writer, "", 2) + "</section>",
        "<section>" + bytes_section(runs, writer) + "</section>",
        "<section id=stragglers>" + straggler_section(run, view, writer, "", 2) + "</section>",
        "<section>" + straggler_delay_section(run, writer, "", 2) + "</section>",
        "<section id=rounds>" + rounds_section(run, 2) + "</section>",
    ])
    nav = [("scenario", "scenario"), ("timeline", "timeline"), ("round-times", "round times"),
           *_metric_links(metrics), ("loss", "loss"), ("memory", "memory"), ("energy", "energy"),
           ("bytes", "bytes"), ("stragglers", "stragglers"),
           ("straggler-delay", "straggler delay"), ("rounds", "rounds")]
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
        parts.append("<p>comparison.csv</p>" + table(data.comparison))
    parts += ["<p>Run folders (timelines, stragglers and bytes use the first seed of each)</p>",
              table(_runs_table(data))]
    parts += [f'<p class="bad">Not rendered: {html.escape(why)}</p>' for why in data.unreadable.values()]
    metrics = metrics_sections(data.runs, writer)
    parts += ["</section>", *("<section>" + section + "</section>" for _, section in metrics),
              "<section>" + loss_section(data.runs, writer) + "</section>",
              "<section>" + bytes_section(data.runs, writer) + "</section>"]
    nav = [("comparison", "comparison"), *_metric_links(metrics), ("loss", "loss"), ("bytes", "bytes")]
    for name, seeds in data.runs.items():
        run, key = seeds[0], f"-{slug(name)}"
        view = fleet(run)
        nav.append((f"fw{key}", name))
        parts += [f"<section id=fw{key}><h2>{html.escape(name)}</h2>",
                  f'<p class="meta">{html.escape(str(run.path))}</p>', scenario_section(run, 3),
                  timeline_section(run, view, writer, key, 3), round_time_section(view, writer, key, 3),
                  memory_section(run, view, writer, key, 3), energy_section(run, view, writer, key, 3),
                  straggler_section(run, view, writer, key, 3), straggler_delay_section(run, writer, key, 3),
                  rounds_section(run, 3), "</section>"]
    return f"comparison {data.path.name}", _nav(nav) + "\n".join(parts)


def _nav(links: list[tuple[str, str]]) -> str:
    """In-page links to the sections."""
    return "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in links) + "</nav>"


def stress_page(data: StressData, writer: PageWriter) -> tuple[str, str]:
    """(title, body) of the page for a stress folder: the grid, then each point's task metrics
    and bytes on shared plots (one line per point); a point's own timeline and stragglers are in
    its report (``testbed report DIR/<point>``)."""
    parts = ["<section>" + grid_section(data, writer) + "</section>"]
    parts += [f'<p class="bad">Not rendered: {html.escape(why)}</p>' for why in data.unreadable.values()]
    nav = [("grid", "grid")]
    if data.runs:
        metrics = metrics_sections(data.runs, writer)
        parts += [*("<section>" + section + "</section>" for _, section in metrics),
                  "<section>" + loss_section(data.runs, writer) + "</section>",
                  "<section>" + bytes_section(data.runs, writer) + "</section>"]
        nav += [*_metric_links(metrics), ("loss", "loss"), ("bytes", "bytes")]
        parts.append('<p class="note">One line per grid point. Each point\'s timeline, memory, energy and '
                     "stragglers: <code>testbed report " + html.escape(str(data.path)) + "/&lt;point&gt;</code>.</p>")
    return f"stress {data.path.name}", _nav(nav) + "\n".join(parts)


def _plotly_js() -> str:
    """plotly.js, to inline once per page (any ``</script`` escaped so it cannot close its tag)."""
    from plotly.offline import get_plotlyjs

    return re.sub(r"</(script)", r"<\\/\1", get_plotlyjs(), flags=re.IGNORECASE)


def write_page(source: RunData | CompareData, out_dir: Path) -> Path:
    """Render the source's page into out_dir (index.html; PNGs an older report left there are
    removed); returns index.html's path."""
    writer = PageWriter()
    if isinstance(source, RunData):
        title, body = run_page(source, writer)
    elif isinstance(source, StressData):
        title, body = stress_page(source, writer)
    else:
        title, body = compare_page(source, writer)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"{source.path.resolve()} · generated {generated} · drag to zoom, double-click to reset, hover for values"
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{CSS}</style><script type="text/javascript">{_plotly_js()}</script></head>'
            f'<body data-figures="{len(writer.names)}"><h1>testbed report: {html.escape(title)}</h1>'
            f'<p class="meta">{html.escape(meta)}</p>{body}</body></html>')
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
