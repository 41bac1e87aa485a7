"""The same scenario on a local Ray (`emulation.backend: ray`) and on the process backend,
side by side in one run: host wall-clock of each, and their ratio (aim: Ray within 1.25x).

    python benchmarks/ray_backend.py                     # the quickstart (3 rounds)
    python benchmarks/ray_backend.py --quick             # the quickstart, 1 round
    python benchmarks/ray_backend.py SCENARIO --set framework.rounds=2

Both runs start from nothing (the Ray run starts its own local Ray, as `address: null` does)
and are timed end to end, set-up included: `host_wall_s` of each run's summary. It also
prints each run's set-up, its clients' summed measured compute and the host calibration the
clock converted it with, and whether the learning (train loss, accuracy per round) came out
the same: it must, the backend only decides where the work runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
LEARNING = ["round", "participants", "failures", "train_loss", "eval_loss", "accuracy"]


def _run(scenario_path: str, overrides: list[str], backend: str, out: Path) -> dict:
    import pandas as pd

    from testbed.config.scenario import load_scenario
    from testbed.sim.session import run_scenario

    scenario = load_scenario(scenario_path, [*overrides, f"emulation.backend={backend}"])
    summary = run_scenario(scenario, out, quiet=True, overwrite=True)
    if summary.get("status") != "completed":
        raise SystemExit(f"{backend}: the run ended {summary.get('status')}: {summary.get('error')}")
    clients = pd.read_csv(out / "client_rounds.csv")
    rounds = pd.read_csv(out / "rounds.csv")
    return {
        "host_wall_s": round(summary["host_wall_s"], 1),
        "setup_s": round(summary["host_setup_s"], 1),
        "client_compute_s": round(float(clients.host_compute_s.sum()), 1),
        "parallel_clients": summary["backend"]["parallel_clients"],
        "gemm_gflops_fp32": round(summary["calibration"]["gemm_gflops_fp32"], 1),
        "peak_rss_mb_max": round(float(clients.peak_rss_mb.max()), 0),
        "hosts": sorted(set(clients.host.astype(str))) if "host" in clients else [],
        "learning": rounds[[c for c in LEARNING if c in rounds]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default=str(REPO / "scenarios" / "quickstart.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--out", default="runs/bench-ray")
    args = ap.parse_args()
    overrides = [*(["framework.rounds=1"] if args.quick else []), *args.overrides]
    out = Path(args.out)

    figures = {backend: _run(args.scenario, overrides, backend, out / backend) for backend in ("process", "ray")}
    same = figures["process"]["learning"].round(6).equals(figures["ray"]["learning"].round(6))
    for backend, f in figures.items():
        f.pop("learning")
        f["hosts"] = len(f["hosts"])
        print(f"{backend:8s} {json.dumps(f)}")
    process_s, ray_s = figures["process"]["host_wall_s"], figures["ray"]["host_wall_s"]
    print(f"\nhost wall-clock: process {process_s:.1f} s, ray {ray_s:.1f} s -> ray / process = "
          f"{ray_s / process_s:.2f}x (aim <= 1.25x); same learning per round: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
