"""`testbed report` pages opened in a real browser: Playwright driving the system's Chromium
(Debian's `chromium`, which .ci/run installs; no browser is downloaded). Every figure must be
drawn (a plotly plot with an SVG and data per figure of the page) with no console error and
no request leaving the page. Skipped where Playwright or Chromium is missing.

    REPORT_SCREENSHOT=docs/report.png pytest tests/testbed/test_report_browser.py   # refresh the README's picture
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from testbed.results.report import build_report
from tests.testbed.fleet_report_data import write_fleet_run
from tests.testbed.test_report import write_generative_run, write_run

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                             "/usr/bin/chromium") if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]

DRAWN = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
    id: d.id, plot: d.classList.contains('js-plotly-plot'), svg: d.querySelectorAll('.main-svg').length,
    traces: (d.data || []).length, points: (d.calcdata || []).reduce((n, trace) => n + trace.length, 0)}))"""


def open_page(index: Path, screenshot: Path | None = None) -> tuple[list[dict], int, list[str]]:
    """(each plot's state, the page's figure count, console errors and outside requests) of the page
    in headless Chromium; a screenshot of its top when asked."""
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:", "about:"))
                    else problems.append(f"request: {r.url}"))
            page.goto(index.resolve().as_uri(), wait_until="load")
            figures = int(page.get_attribute("body", "data-figures"))
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {figures}",
                                   timeout=30_000)
            drawn = page.evaluate(DRAWN)
            if screenshot is not None:  # from the timeline down, with a bar's hover label showing
                page.evaluate("window.scrollTo(0, document.querySelector('#timeline').offsetTop - 8)")
                bar = page.locator("#plot-timeline .bars .point path").nth(4).bounding_box()
                page.mouse.move(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)
                page.wait_for_selector("#plot-timeline .hoverlayer .hovertext", timeout=5_000)
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return drawn, figures, problems


def _assert_all_drawn(drawn: list[dict], figures: int, problems: list[str]) -> None:
    assert problems == []
    assert len(drawn) == figures > 0
    for plot in drawn:
        assert plot["plot"] and plot["svg"] >= 1 and plot["traces"] >= 1 and plot["points"] >= 1, plot


def test_run_page_draws_every_plot_in_chromium(tmp_path):
    folder = write_run(tmp_path / "run", framework="kd", student_accuracy=(0.1, 0.15, 0.25))
    index = build_report(folder)
    shot = Path(os.environ.get("REPORT_SCREENSHOT") or tmp_path / "report.png")
    drawn, figures, problems = open_page(index, screenshot=shot)
    _assert_all_drawn(drawn, figures, problems)
    assert [d["id"] for d in drawn] == ["plot-timeline", "plot-round_times", "plot-accuracy", "plot-loss",
                                        "plot-memory", "plot-energy", "plot-bytes", "plot-stragglers",
                                        "plot-straggler_delay"]
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fleet_compare_and_stress_pages_draw_every_plot(tmp_path):
    cmp = tmp_path / "cmp"
    write_fleet_run(cmp / "fedllm", clients=120, rounds=8, per_round=40, parquet=False)
    write_generative_run(cmp / "split", framework="split")
    pd.DataFrame({"framework": ["fedllm", "split"]}).to_csv(cmp / "comparison.csv", index=False)
    stress = tmp_path / "stress"
    for rate in (0.0, 0.1):
        write_run(stress / f"emulation.dropout={rate}", accuracy=(0.2, 0.3, 0.4 - rate))
    pd.DataFrame({"emulation.dropout": [0.0, 0.1], "final_accuracy": [0.4, 0.3], "sim_wall_clock_s": [22.0, 22.0],
                  "status": "completed", "run_dir": [str(stress / f"emulation.dropout={r}") for r in (0.0, 0.1)]}
                 ).to_csv(stress / "stress.csv", index=False)
    for folder, least in ((cmp, 15), (stress, 4)):
        drawn, figures, problems = open_page(build_report(folder))
        _assert_all_drawn(drawn, figures, problems)
        assert figures >= least
    assert re.search(r"plot-grid", (stress / "report" / "index.html").read_text())
