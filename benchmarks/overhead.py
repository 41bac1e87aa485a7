"""How much host time the testbed spends outside client and server compute.

Runs a scenario (default: the quickstart) and splits the run's host wall-clock into
    setup        server model load, worker spawn + model load, host calibration
    client fit   wall time while clients' local training ran (the backend's fit call)
    server       held-out evaluation + aggregation
    outside      everything else: simulation, serialisation, IPC, tables, progress
and prints each as a share of the run. Inside the client-fit wall, it also reports how much
was the clients' own measured compute (sum of host_compute_s / parallel workers).

    python benchmarks/overhead.py [SCENARIO] [--set key=value ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default=str(REPO / "scenarios" / "quickstart.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="runs/bench-overhead")
    args = ap.parse_args()

    import pandas as pd

    from testbed.config.scenario import load_scenario
    from testbed.sim.session import run_scenario

    scenario = load_scenario(args.scenario, args.overrides)
    t0 = time.perf_counter()
    summary = run_scenario(scenario, Path(args.out), quiet=True)
    wall_s = time.perf_counter() - t0
    rounds = pd.read_csv(Path(args.out) / "rounds.csv")
    clients = pd.read_csv(Path(args.out) / "client_rounds.csv")
    parallel = summary["backend"]["parallel_clients"]

    setup_s = summary["host_setup_s"]
    fit_s = float(rounds.host_fit_s.fillna(0).sum())
    server_s = float(rounds.host_eval_s.fillna(0).sum() + rounds.server_compute_s.fillna(0).sum())
    outside_s = wall_s - setup_s - fit_s - server_s
    client_compute_s = float(clients.host_compute_s.sum()) / parallel
    figures = {
        "scenario": scenario.name,
        "host_wall_s": round(wall_s, 1),
        "setup_s": round(setup_s, 1),
        "client_fit_wall_s": round(fit_s, 1),
        "client_compute_s_per_worker": round(client_compute_s, 1),
        "server_compute_s": round(server_s, 1),
        "outside_compute_s": round(outside_s, 1),
        "outside_share": round(outside_s / wall_s, 4),
        "outside_share_incl_setup": round((outside_s + setup_s) / wall_s, 4),
        "fit_wall_not_in_client_compute_share": round((fit_s - client_compute_s) / wall_s, 4),
        "final_accuracy": summary.get("final_accuracy"),
        "initial_accuracy": summary.get("initial_accuracy"),
        "parallel_clients": parallel,
    }
    print(json.dumps(figures, indent=2))
    print(f"\noutside compute: {outside_s:.1f} s of {wall_s:.1f} s = {100 * outside_s / wall_s:.1f}% "
          f"(with one-time setup {setup_s:.1f} s: {100 * (outside_s + setup_s) / wall_s:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
