"""``testbed run``: one scenario into one run directory.

Start-up order matters: the scenario is validated first, then (backend: process) the workers'
forkserver is started, and only then are pandas, torch and the runner imported, with the
garbage collector paused. Keep heavy imports inside the functions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from testbed.cli.common import bad_input, collector_paused, interrupt_on_sigterm, load


def add_parser(subparsers: Any) -> None:
    """Add ``run`` to the ``testbed`` command."""
    run = subparsers.add_parser("run", help="run a scenario into a run directory")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--out", help="run directory (default: the scenario's `output`)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. framework.rounds=2 or fleet.0.count=3 (repeatable)")
    run.add_argument("--replay-compute", metavar="RUN_DIR",
                     help="reuse the measured compute durations of a previous run of this scenario")
    run.add_argument("--quiet", action="store_true", help="no progress bar or table")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", metavar="DIR",
                       help="go on in run folder DIR after its last completed round (same scenario and --set); "
                            "a completed run is only reported")
    again.add_argument("--overwrite", action="store_true",
                       help="reuse a folder that holds a run by starting it over (its files are removed)")


def cmd_run(args) -> int:
    """0 if the run completed, 1 if it did not (or assets/Docker are missing), 2 on bad input."""
    interrupt_on_sigterm()
    from testbed.config.scenario import ScenarioError

    try:
        scenario = load(args)
    except ScenarioError as exc:
        return bad_input(str(exc))
    from testbed.results.runfolder import RunFolderError, precheck

    try:  # a folder in use or holding a run: said at once, before the workers' imports start
        precheck(Path(args.resume or args.out or scenario.output), resume=bool(args.resume), overwrite=args.overwrite)
    except RunFolderError as exc:
        return bad_input(str(exc))
    # first: its imports overlap all that follows, ours too (a predicted run starts no worker; its
    # probe, where the cost table is not cached yet, starts the forkserver when it needs it)
    if scenario.emulation.backend == "process" and scenario.emulation.compute == "measured":
        from testbed.config.registry import framework_module
        from testbed.host.forkserver import worker_context

        worker_context((framework_module(scenario.framework.name),))
    with collector_paused():  # pandas, torch and the runner: long-lived objects, no need to walk them
        from testbed.ml.assets import AssetError
        from testbed.ml.data import DataError
        from testbed.sim.replay import ReplayError
        from testbed.sim.session import run_scenario

    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        return bad_input(f"--out {args.out} and --resume {args.resume}: a resumed run goes on in its own folder")
    if args.resume and not Path(args.resume).is_dir():
        return bad_input(f"--resume {args.resume}: no such run folder")
    try:
        out_dir = Path(args.resume or args.out or scenario.output)
        if _server_container_wanted(scenario):
            return _run_in_server_container(scenario, out_dir, args)
        summary = run_scenario(scenario, out_dir, replay_dir=args.replay_compute, quiet=args.quiet,
                               resume=bool(args.resume), overwrite=args.overwrite)
    except (ScenarioError, DataError, ReplayError, RunFolderError) as exc:
        return bad_input(str(exc))
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if summary.get("status") == "completed" else 1


def _server_container_wanted(scenario) -> bool:
    """backend: docker puts the server in its own container, unless this is that container."""
    if scenario.emulation.backend != "docker" or scenario.emulation.docker.server != "container":
        return False
    from testbed.sim.server_container import in_server_container

    return not in_server_container()


def _run_in_server_container(scenario, out_dir: Path, args) -> int:
    from testbed.backends.docker import DockerUnavailable
    from testbed.sim.server_container import run_in_server_container

    try:
        return run_in_server_container(scenario, out_dir, replay_dir=args.replay_compute, quiet=args.quiet,
                                       resume=bool(args.resume), overwrite=args.overwrite)
    except DockerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
