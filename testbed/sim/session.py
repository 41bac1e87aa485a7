"""`testbed run`: one scenario -> one run directory, with a progress bar and a summary."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from testbed.config.scenario import Scenario
from testbed.results.recorder import FAILED_OUTCOMES
from testbed.sim.replay import ComputeReplay


def git_commit() -> str:
    if os.environ.get("TESTBED_GIT_COMMIT"):  # set by the host for a run inside a container (no git there)
        return os.environ["TESTBED_GIT_COMMIT"]
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "simpy", "pandas", "safetensors", "fedge-testbed"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "not installed"
    return found


def write_resolved_scenario(scenario: Scenario, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scenario.yaml").write_text(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))


def _round_line(row: dict[str, Any]) -> str:
    acc = row.get("accuracy")
    acc_txt = f"acc {acc:.3f}" if acc is not None else "acc -"
    loss = row.get("train_loss")
    loss_txt = f" train loss {loss:.3f}" if loss is not None else ""
    return (f"round {row['round']}: {acc_txt}{loss_txt}  sim {row['sim_end_s']:.1f} s  "
            f"participants {row['participants']}  failures {row['failures']}")


def _failed_clients(client_rounds: list[dict[str, Any]], rnd: int) -> str:
    """The round's failed clients and their causes, e.g. "  (pixel-7: oom)"; "" when none."""
    failed = [f"{r['device']}: {r['cause']}" for r in client_rounds
              if r["round"] == rnd and r["outcome"] in FAILED_OUTCOMES]
    return f"  ({', '.join(failed)})" if failed else ""


def final_table(rounds: list[dict[str, Any]]) -> Table:
    table = Table(title="rounds")
    for col in ("round", "sim end s", "participants", "failures", "train loss", "eval loss", "accuracy", "up MB"):
        table.add_column(col, justify="right")
    for r in rounds:
        def f(key: str, fmt: str = "{:.3f}") -> str:
            v = r.get(key)
            return fmt.format(v) if v is not None else "-"
        table.add_row(str(r["round"]), f("sim_end_s", "{:.1f}"), str(r["participants"]), str(r["failures"]),
                      f("train_loss"), f("eval_loss"), f("accuracy"), f"{(r.get('bytes_up') or 0) / 1e6:.2f}")
    return table


def run_scenario(scenario: Scenario, out_dir: Path, *, replay_dir: str | None = None,
                 quiet: bool = False) -> dict[str, Any]:
    from testbed.ml.assets import resolve_model
    from testbed.sim.runner import Runner

    console = Console(stderr=True, quiet=quiet)
    replay = ComputeReplay.from_run_dir(replay_dir) if replay_dir else None
    write_resolved_scenario(scenario, out_dir)
    model_dir = resolve_model(scenario.model)
    summary: dict[str, Any] = {
        "scenario": scenario.name, "framework": scenario.framework.name, "model": scenario.model,
        "model_dir": model_dir, "seed": scenario.seed, "status": "running",
        "started_at": datetime.now(timezone.utc).isoformat(), "git_commit": git_commit(), "versions": versions(),
        "replayed_compute_from": replay.source if replay else None,
    }
    host_t0 = time.perf_counter()
    runner = Runner(scenario, out_dir, model_dir=model_dir, replay=replay, progress=lambda m: console.log(m))
    try:
        runner.start()
        summary.update(_backend_facts(runner), host_setup_s=time.perf_counter() - host_t0)
        runner.recorder.write_json("summary.json", summary)
        rounds = _run_with_progress(runner, scenario, console, summary)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed"
        summary.update(status=status, host_wall_s=time.perf_counter() - host_t0)
        runner.recorder.write_json("summary.json", summary)
        raise
    finally:
        runner.close()
    last = rounds[-1] if rounds else {}
    summary.update(
        status="completed", finished_at=datetime.now(timezone.utc).isoformat(),
        host_wall_s=time.perf_counter() - host_t0, sim_wall_clock_s=runner.env.now,
        final_accuracy=last.get("accuracy"), initial_accuracy=rounds[0].get("accuracy") if rounds else None,
        final_eval_loss=last.get("eval_loss"), rounds_completed=scenario.framework.rounds,
    )
    runner.recorder.write_json("summary.json", summary)
    console.print(final_table(rounds))
    console.print(f"run directory: {out_dir}  (simulated wall-clock {runner.env.now:.1f} s, "
                  f"host {summary['host_wall_s']:.0f} s)")
    return summary


def _backend_facts(runner) -> dict[str, Any]:
    backend = runner.backend
    return {
        "calibration": runner.calibration.to_dict(),
        "precision": runner.scenario.framework.precision,  # as run (framework.precision: auto resolved)
        "backend": {
            "kind": runner.scenario.emulation.backend,
            "parallel_clients": getattr(backend, "parallel", 1),
            "threads_per_client": runner.scenario.emulation.threads_per_client,
            "cgroups_enforced": getattr(backend, "cgroups_enforced", False),
            "worker_processes": len(backend.processes) if hasattr(backend, "processes") else None,
            "workers": runner.layout,
            # where held-out evaluation runs: the data-parallel group (the server then loads no
            # model unless that fails) or the server
            "evaluation": "client_group" if runner.eval_on_group else "server",
            "server_model_loaded": getattr(runner.framework, "model", None) is not None,
            "time": runner.scenario.emulation.time,
            "cpu_quota_cores": {str(k): round(v, 4) for k, v in runner.throttled.items()},
            **(backend.facts() if hasattr(backend, "facts") else {}),
        },
        "clients": [
            {"client": c.client_id, "name": c.name, "device": c.device.name, "link": asdict(c.link),
             "memory_budget_mb": c.memory_budget_mb}
            for c in runner.clients
        ],
    }


def _run_with_progress(runner, scenario: Scenario, console: Console, summary: dict[str, Any]) -> list[dict]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False, disable=console.quiet) as progress:
        task = progress.add_task(f"{scenario.framework.name} rounds", total=scenario.framework.rounds)

        def on_round(row: dict[str, Any]) -> None:
            console.log(_round_line(row) + _failed_clients(runner.recorder.client_rounds, row["round"]))
            if row["round"] > 0:
                progress.advance(task)
            summary["rounds_completed"] = row["round"]
            runner.recorder.write_json("summary.json", summary)

        return runner.run(on_round=on_round)
