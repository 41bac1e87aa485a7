"""How fast `testbed report` renders a large fleet's run folder, and how heavy its page is.

    python benchmarks/report_scale.py                      # synthetic 10,000 clients x 100 rounds x 1,000/round
    python benchmarks/report_scale.py --clients 2000       # a smaller synthetic fleet
    python benchmarks/report_scale.py runs/fleet10k        # also a real run folder (or compare folder)

The synthetic folder (tests/testbed/fleet_report_data.py: about 300,000 events and 100,000
client-rounds, learning metrics NaN as in `emulation.compute: predicted`) is written once with
its tables as CSV and Parquet, and reported twice: reading the Parquet tables, then with them
removed, reading the CSVs. For each folder it prints the seconds of `testbed report DIR` as a
fresh process (imports included, what a user waits for), the seconds of the report alone in this
process (median of --repeats, after one warm-up), the size of index.html beyond the plotly.js it
inlines (about 4.8 MB, the same for every page) and, where Playwright and Chromium are
installed, the seconds headless Chromium takes to open the page and draw every plot. Aims:
under 10 s and under 5 MB beyond plotly.js at 10,000 clients on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plotly.offline import get_plotlyjs

from testbed.results.report import build_report
from tests.testbed.fleet_report_data import write_fleet_run

TARGET_S = 10.0
TARGET_MB = 5.0


def cli_seconds(folder: Path) -> float:
    """Wall seconds of ``python -m testbed.cli report FOLDER`` as a fresh process."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "testbed.cli", "report", str(folder)], check=True, cwd=REPO,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def in_process_seconds(folder: Path, repeats: int) -> tuple[float, Path]:
    """Median seconds of build_report(folder) over ``repeats`` calls, after a warm-up call."""
    index = build_report(folder)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        index = build_report(folder)
        times.append(time.perf_counter() - started)
    return statistics.median(times), index


def browser_seconds(index: Path) -> float | None:
    """Seconds headless Chromium takes to load the page until every plot is drawn (None without
    Playwright or a chromium binary)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            started = time.perf_counter()
            page.goto(index.resolve().as_uri(), wait_until="load")
            figures = int(page.get_attribute("body", "data-figures"))
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {figures}",
                                   timeout=120_000)
            return time.perf_counter() - started
        finally:
            browser.close()


def measure(label: str, folder: Path, repeats: int) -> None:
    """Print one folder's figures."""
    cold_s = cli_seconds(folder)
    warm_s, index = in_process_seconds(folder, repeats)
    mb = index.stat().st_size / 1e6
    beyond_mb = mb - len(get_plotlyjs()) / 1e6
    drawn_s = browser_seconds(index)
    browser = f"{drawn_s:5.2f} s" if drawn_s is not None else "not measured (no playwright/chromium)"
    verdict = "ok" if cold_s < TARGET_S and beyond_mb < TARGET_MB else "OVER TARGET"
    print(f"{label:<34} testbed report {cold_s:5.2f} s (fresh process) | report alone {warm_s:5.2f} s "
          f"(median of {repeats}) | page {mb:.2f} MB, {beyond_mb:.2f} MB beyond plotly.js | "
          f"drawn in Chromium {browser} | {verdict}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="real run or compare folders to report as well")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report_scale_") as tmp:
        folder = Path(tmp) / "fleet"
        started = time.perf_counter()
        write_fleet_run(folder, clients=args.clients, rounds=args.rounds, per_round=args.per_round)
        print(f"synthetic fleet: {args.clients:,} clients, {args.rounds} rounds x {args.per_round:,} clients, "
              f"written in {time.perf_counter() - started:.1f} s", flush=True)
        measure("synthetic, Parquet tables", folder, args.repeats)
        for parquet in folder.glob("*.parquet"):
            parquet.unlink()
        measure("synthetic, CSV tables", folder, args.repeats)
    for folder in args.folders:
        measure(str(folder), folder, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
