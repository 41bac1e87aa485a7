"""`testbed run`: one scenario -> one run directory, with a progress bar and a summary."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
import subprocess
import time
import traceback
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from testbed.config.scenario import Scenario, ScenarioError
from testbed.results.console import RunConsole
from testbed.results.recorder import write_json_atomic
from testbed.results.runfolder import claim, read_summary
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


def write_resolved_scenario(scenario: Scenario, out_dir: Path, name: str = "scenario.yaml") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))


# (rounds.csv column, header, format) of the task's metrics in the end-of-run table
CLASSIFICATION_COLUMNS = (("accuracy", "accuracy", "{:.3f}"),)
GENERATIVE_COLUMNS = (("perplexity", "perplexity", "{:.2f}"), ("rouge_l", "rouge-L", "{:.3f}"),
                      ("exact_match", "exact match", "{:.3f}"))


def _generative(rows: list[dict[str, Any]]) -> bool:
    """Rows of a generative task (instruction, language modelling): they carry `perplexity`."""
    return any("perplexity" in row for row in rows)


def _value(row: dict[str, Any], key: str) -> Any:
    """The row's value, None where missing or NaN (not evaluated)."""
    value = row.get(key)
    return None if isinstance(value, float) and math.isnan(value) else value


def _metric_text(row: dict[str, Any], key: str, label: str, fmt: str) -> str:
    value = _value(row, key)
    return f"{label} {fmt.format(value)}" if value is not None else f"{label} -"


def _round_line(row: dict[str, Any]) -> str:
    if _generative([row]):  # ppl, and rouge-L when the round generated
        acc_txt = _metric_text(row, "perplexity", "ppl", "{:.2f}") + (
            "  " + _metric_text(row, "rouge_l", "rouge-L", "{:.3f}") if _value(row, "rouge_l") is not None else "")
    else:
        acc_txt = _metric_text(row, "accuracy", "acc", "{:.3f}")
    loss = _value(row, "train_loss")
    loss_txt = f" train loss {loss:.3f}" if loss is not None else ""
    return (f"round {row['round']}: {acc_txt}{loss_txt}  sim {row['sim_end_s']:.1f} s  "
            f"participants {row['participants']}  failures {row['failures']}")


FAILURES_NAMED = 8  # a round line names up to this many failed clients, else counts them by cause


def _failed_clients(failed_client_rounds: list[tuple[int, str, str]], rnd: int) -> str:
    """The round's failed clients and their causes, e.g. "  (pixel-7: oom)"; "" when none, from the
    (round, device, cause) of failed client rows."""
    failed = [(device, cause) for r, device, cause in failed_client_rounds if r == rnd]
    if len(failed) > FAILURES_NAMED:  # a fleet's round: counted by cause, the most frequent first
        causes = Counter(cause for _, cause in failed).most_common()
        return f"  ({len(failed):,} failed: {', '.join(f'{n:,} {cause}' for cause, n in causes)})"
    return f"  ({', '.join(f'{device}: {cause}' for device, cause in failed)})" if failed else ""


def final_table(rounds: list[dict[str, Any]]) -> Table:
    """The rounds with the task's metrics: accuracy, or perplexity (and rouge_l, exact_match
    where the run generated) for a generative task."""
    metrics = ([c for c in GENERATIVE_COLUMNS
                if c[0] == "perplexity" or any(_value(r, c[0]) is not None for r in rounds)]
               if _generative(rounds) else CLASSIFICATION_COLUMNS)
    table = Table(title="rounds")
    for col in ("round", "sim end s", "participants", "failures", "train loss", "eval loss",
                *(header for _, header, _ in metrics), "up MB"):
        table.add_column(col, justify="right")
    for r in rounds:
        def f(key: str, fmt: str = "{:.3f}") -> str:
            v = _value(r, key)
            return fmt.format(v) if v is not None else "-"
        table.add_row(str(r["round"]), f("sim_end_s", "{:.1f}"), str(r["participants"]), str(r["failures"]),
                      f("train_loss"), f("eval_loss"), *(f(key, fmt) for key, _, fmt in metrics),
                      f"{(r.get('bytes_up') or 0) / 1e6:.2f}")
    return table


def run_scenario(scenario: Scenario, out_dir: Path, *, replay_dir: str | None = None, quiet: bool = False,
                 resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run `scenario` into `out_dir` (held for this run alone: testbed.results.runfolder) and
    return its summary. `resume`: go on after the folder's last completed round (its
    checkpoint); a completed run is only reported. `overwrite`: start the folder over.
    RunFolderError: the folder is another run's, or holds a run and neither was asked for;
    ScenarioError: `resume` with a scenario other than the folder's."""
    console = RunConsole(stderr=True, quiet=quiet)  # outside a terminal: tables in full width
    out_dir = Path(out_dir)
    with claim(out_dir, resume=resume, overwrite=overwrite):
        prior = read_summary(out_dir) if resume else None
        if prior is not None and prior.get("status") == "completed":
            console.print(final_table(_rounds_of(out_dir)))
            console.print(f"run directory: {out_dir}  (completed: nothing to resume)")
            return prior
        checkpoint = _checkpoint_to_resume(scenario, out_dir) if resume else None
        if checkpoint is not None and replay_dir is None and (prior or {}).get("replayed_compute_from"):
            replay_dir = str(Path(prior["replayed_compute_from"]).parent)  # its rounds replayed that run's compute
            console.log(f"--resume: replaying compute from {replay_dir}, as the rounds before the checkpoint did")
        summary = _run(scenario, out_dir, console, replay_dir=replay_dir, checkpoint=checkpoint, prior=prior)
        if scenario.output.tracking is not None:  # the finished run into its tracking store too (never fails it)
            from testbed.results.tracking import track_run

            track_run(scenario, out_dir, summary, console)
        return summary


def _checkpoint_to_resume(scenario: Scenario, out_dir: Path):
    """The folder's checkpoint (None: no round completed, the run starts over), once the
    scenario is the folder's own."""
    from testbed.sim.checkpoint import CheckpointError, read_checkpoint

    recorded = out_dir / "scenario.yaml"
    if recorded.is_file():
        try:
            before = yaml.safe_load(recorded.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ScenarioError(f"{recorded}: unreadable ({exc})") from None
        # `output` is where the folder was first asked for: --resume names where it is now
        after = {k: v for k, v in scenario.model_dump(mode="json").items() if k != "output"}
        before = {k: v for k, v in before.items() if k != "output"} if isinstance(before, dict) else {}
        differ = scenario_differences(before, after)
        if differ:
            raise ScenarioError(f"{recorded}: --resume needs the same scenario; these fields differ: "
                                f"{', '.join(differ[:12])}{' ...' if len(differ) > 12 else ''}")
    try:
        return read_checkpoint(out_dir)
    except CheckpointError as exc:
        raise ScenarioError(f"--resume: {exc}") from None


def scenario_differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Dotted paths where two scenario dumps differ, e.g. `framework.rounds (4 -> 3)`."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [d for key in sorted(set(before) | set(after), key=str)
                for d in scenario_differences(before.get(key), after.get(key), f"{where}.{key}" if where else str(key))]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after, strict=True))
                for d in scenario_differences(b, a, f"{where}.{i}")]
    return [] if before == after else [f"{where or 'scenario'} ({before!r} -> {after!r})"]


def _rounds_of(out_dir: Path) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        rows = pd.read_csv(out_dir / "rounds.csv").to_dict("records")
    except (OSError, ValueError):
        return []
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows]


def _run(scenario: Scenario, out_dir: Path, console: Console, *, replay_dir: str | None, checkpoint,
         prior: dict[str, Any] | None) -> dict[str, Any]:
    from testbed.ml.assets import resolve_model
    from testbed.protocol import ModelDiverged
    from testbed.sim.runner import Runner

    host_t0 = time.perf_counter()
    summary: dict[str, Any] = {
        "scenario": scenario.name, "task": scenario.task.kind, "framework": scenario.framework.name,
        "compute": scenario.emulation.compute,
        "model": scenario.model, "seed": scenario.seed, "status": "running", "pid": os.getpid(),
        "host": socket.gethostname(), "started_at": datetime.now(timezone.utc).isoformat(),
        "git_commit": git_commit(), "versions": versions(),
        "replayed_compute_from": replay_dir, "resumed_after_round": checkpoint.round if checkpoint else None,
        "resumes": (prior or {}).get("resumes", 0) + 1 if prior is not None else 0,
    }
    runner = None
    try:
        write_json_atomic(out_dir / "summary.json", summary)
        replay = ComputeReplay.from_run_dir(replay_dir) if replay_dir else None
        summary["replayed_compute_from"] = replay.source if replay else None
        write_resolved_scenario(scenario, out_dir)
        summary["model_dir"] = model_dir = resolve_model(scenario.model)
        runner = Runner(scenario, out_dir, model_dir=model_dir, replay=replay, progress=lambda m: console.log(m),
                        resume=checkpoint)
        runner.start()
        summary.update(_backend_facts(runner), host_setup_s=time.perf_counter() - host_t0)
        runner.recorder.write_json("summary.json", summary)
        rounds = _run_with_progress(runner, scenario, console, summary)
    except BaseException as exc:
        summary.update(status=_status_of(exc), error=f"{type(exc).__name__}: {exc}",
                       error_tail=traceback.format_exc().splitlines()[-20:], host_wall_s=time.perf_counter() - host_t0,
                       finished_at=datetime.now(timezone.utc).isoformat())
        with contextlib.suppress(OSError):  # a full disk may refuse even this: the pid tells the truth then
            write_json_atomic(out_dir / "summary.json", summary)
        if summary["status"] == "failed" and isinstance(exc, ModelDiverged):
            console.print(f"[red]run failed:[/red] {exc}")
            return summary
        raise
    finally:
        if runner is not None:
            runner.close()
    last = rounds[-1] if rounds else {}
    summary.update(
        status="completed", finished_at=datetime.now(timezone.utc).isoformat(),
        host_wall_s=time.perf_counter() - host_t0, sim_wall_clock_s=runner.env.now,
        final_accuracy=last.get("accuracy"), initial_accuracy=rounds[0].get("accuracy") if rounds else None,
        final_eval_loss=last.get("eval_loss"), rounds_completed=scenario.framework.rounds,
        host_checkpoint_s=runner.checkpoints.host_s,
    )
    if scenario.task.generative:  # the round 0 values stay None when the run did not evaluate before training
        before = rounds[0] if rounds and rounds[0].get("round") == 0 else {}
        summary.update({f"{when}_{key}": row.get(key) for key in ("perplexity", "rouge_l")
                        for when, row in (("final", last), ("initial", before))})
    runner.recorder.write_json("summary.json", summary)
    console.print(final_table(rounds))
    console.print(f"run directory: {out_dir}  (simulated wall-clock {runner.env.now:.1f} s, "
                  f"host {summary['host_wall_s']:.0f} s)")
    return summary


def _status_of(exc: BaseException) -> str:
    """interrupted (Ctrl-C, SIGTERM), failed (a check ended it), or crashed."""
    from testbed.ml.data import DataError
    from testbed.protocol import ModelDiverged
    from testbed.sim.ledger import ResumeError
    from testbed.sim.replay import ReplayError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, (ModelDiverged, ScenarioError, DataError, ReplayError, ResumeError)):
        return "failed"
    return "crashed"


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
        done = runner.resume.round if runner.resume is not None else 0  # rounds of before a resume
        task = progress.add_task(f"{scenario.framework.name} rounds", total=scenario.framework.rounds, completed=done)

        def on_round(row: dict[str, Any]) -> None:
            console.log(_round_line(row) + _failed_clients(runner.recorder.failed_client_rounds(), row["round"]))
            if row["round"] > 0:
                progress.advance(task)
            summary["rounds_completed"] = row["round"]
            runner.recorder.write_json("summary.json", summary)

        return runner.run(on_round=on_round)
