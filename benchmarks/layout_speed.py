"""Is the code at HEAD slower than at an earlier commit? The same runs side by side.

    python benchmarks/layout_speed.py                      # before = the commit before the layered layout
    python benchmarks/layout_speed.py --before <ref> --quick --repeats 2

Checks out `--before` into a temporary git worktree and runs, alternately in it and in this
tree (before, after, before, after, ...): `benchmarks/des_scale.py --quick` (the network
simulator alone: the CPU seconds of its process, and of its simulated rounds as it prints
them) and the quickstart (`testbed run scenarios/quickstart.yaml`: the real model, the real
fleet; its host wall-clock from summary.json, set-up included).
`--quick` runs the quickstart for one round instead of its three. Both trees use this
checkout's .venv and asset cache. Prints each run and the after/before ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT_BEFORE = "452e517"  # golden runs recorded, code not yet moved into layer packages


def _cpu_children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(tree: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)}
    env.setdefault("TESTBED_CACHE", str(ROOT / ".cache" / "assets"))
    return env


def des_scale_cpu_s(tree: Path) -> tuple[float, float]:
    """(CPU seconds of the whole `des_scale.py --quick` process, CPU seconds of its simulated
    rounds alone as it prints them) run from `tree`."""
    before = _cpu_children_s()
    out = subprocess.run([sys.executable, "benchmarks/des_scale.py", "--quick"], cwd=tree, env=_env(tree),
                         check=True, capture_output=True, text=True).stdout
    rounds = re.search(r"host CPU: ([0-9.]+) s", out)
    return _cpu_children_s() - before, float(rounds.group(1)) if rounds else float("nan")


def quickstart_s(tree: Path, rounds: int | None) -> tuple[float, float]:
    """(host wall-clock s from summary.json, simulated wall-clock s) of the quickstart run from `tree`."""
    with tempfile.TemporaryDirectory(prefix="layout-speed-") as out:
        cmd = [sys.executable, "-m", "testbed.cli", "run", "scenarios/quickstart.yaml", "--out", out, "--quiet"]
        if rounds is not None:
            cmd += ["--set", f"framework.rounds={rounds}"]
        subprocess.run(cmd, cwd=tree, env=_env(tree), check=True, capture_output=True, text=True)
        summary = json.loads((Path(out) / "summary.json").read_text())
    return float(summary["host_wall_s"]), float(summary["sim_wall_clock_s"])


def _worktree(ref: str, where: Path) -> Path:
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: --before {ref}: cannot check it out: {done.stderr.strip().splitlines()[-1]}")
    return where


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=LAYOUT_BEFORE, help="git ref of the code to compare against")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side (alternating)")
    parser.add_argument("--quick", action="store_true", help="quickstart for one round")
    parser.add_argument("--skip-quickstart", action="store_true")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else None
    with tempfile.TemporaryDirectory(prefix="layout-before-") as tmp:
        before = _worktree(args.before, Path(tmp) / "tree")
        try:
            trees = {"before": before, "after": ROOT}
            des: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
            quick: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
            for i in range(args.repeats):
                for side, tree in trees.items():
                    t0 = time.perf_counter()
                    des[side].append(des_scale_cpu_s(tree))
                    print(f"[{i}] {side:6s} des_scale --quick: {des[side][-1][0]:.2f} CPU s, rounds alone "
                          f"{des[side][-1][1]:.2f} CPU s", flush=True)
                    if not args.skip_quickstart:
                        quick[side].append(quickstart_s(tree, rounds))
                        host_s, sim_s = quick[side][-1]
                        print(f"[{i}] {side:6s} quickstart: host {host_s:.1f} s, simulated {sim_s:.1f} s "
                              f"({time.perf_counter() - t0:.0f} s in all)", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                           capture_output=True)
    print(f"\nbefore = {args.before}, after = working tree; median of {args.repeats} run(s) each")
    _ratio("des_scale --quick CPU s", [statistics.median(p for p, _ in des[k]) for k in ("before", "after")])
    _ratio("des_scale rounds alone CPU s", [statistics.median(r for _, r in des[k]) for k in ("before", "after")])
    if not args.skip_quickstart:
        _ratio("quickstart host wall-clock s", [statistics.median(h for h, _ in quick[k]) for k in ("before", "after")])


def _ratio(name: str, values: list[float]) -> None:
    b, a = values
    print(f"{name:32s} before {b:8.2f}   after {a:8.2f}   after/before {a / b:.3f}")


if __name__ == "__main__":
    main()
