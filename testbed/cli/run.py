"""``testbed run``: one scenario into one run directory.

Start-up order matters: the scenario is validated first, then (backend: process) the workers'
forkserver is started, and only then are pandas, torch and the runner imported, with the
garbage collector paused. Keep heavy imports inside the functions.

What the console shows also goes to ``<run folder>/run.log`` (testbed.results.runlog), a crash's
traceback too; ``--quiet`` shows only errors, ``--json`` prints one JSON document (the run's
summary, its folder and its rounds) on stdout and nothing else there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from testbed.cli.common import bad_input, collector_paused, interrupt_on_sigterm, load
from testbed.results.runlog import RunLog


def add_parser(subparsers: Any) -> None:
    """Add ``run`` to the ``testbed`` command."""
    run = subparsers.add_parser("run", help="run a scenario into a run directory (its console also in run.log there)")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--out", help="run directory (default: the scenario's `output`)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. framework.rounds=2 or fleet.0.count=3 (repeatable)")
    run.add_argument("--replay-compute", metavar="RUN_DIR",
                     help="reuse the measured compute durations of a previous run of this scenario")
    run.add_argument("--quiet", action="store_true",
                     help="nothing on the console but errors (run.log in the run folder still has it all)")
    run.add_argument("--json", action="store_true",
                     help="print one JSON document on stdout when the run ends: its summary.json, run_dir and "
                          "rounds (the rows of rounds.csv); progress and messages go to stderr")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", metavar="DIR",
                       help="go on in run folder DIR after its last completed round (same scenario and --set); "
                            "a completed run is only reported")
    again.add_argument("--overwrite", action="store_true",
                       help="reuse a folder that holds a run by starting it over (its files are removed)")


def cmd_run(args) -> int:
    """0 if the run completed, 1 if it did not (or assets/Docker are missing), 2 on bad input."""
    interrupt_on_sigterm()
    run_dir: list[Path] = []  # the folder, once the run has one
    interrupted = False
    with RunLog(quiet=args.quiet, stdout_to_stderr=args.json) as log:
        try:
            code = _cmd_run(args, log, run_dir)
        except KeyboardInterrupt:
            log.record("interrupted\n")  # (main says it on the console)
            interrupted = True
        except Exception as exc:  # noqa: BLE001  (a crash: its traceback in run.log, and on the console unless --quiet)
            code = _crashed(exc, log)
    _print_json(args, run_dir)  # (on the real stdout: the run log's tees are gone)
    if interrupted:
        raise KeyboardInterrupt
    return code


def _crashed(exc: Exception, log: RunLog) -> int:
    """A run that ended in an exception: a module of an extra not installed is bad input (one
    line naming the extra, exit 2); anything else is a crash, its traceback in run.log (exit 1)."""
    import traceback

    from testbed.config.extras import missing_extra_message

    message = missing_extra_message(exc) if isinstance(exc, ImportError) else None
    if message is not None:
        return bad_input(message, file=log.errors)
    print(traceback.format_exc(), end="", file=sys.stderr)
    where = f" (traceback in {log.path})" if log.path is not None else ""
    log.error(f"error: the run crashed: {type(exc).__name__}: {exc}{where}")
    return 1


def _cmd_run(args, log: RunLog, run_dir: list[Path]) -> int:
    from testbed.config.scenario import ScenarioError

    try:
        scenario = load(args)
    except ScenarioError as exc:
        return bad_input(str(exc), file=log.errors)
    from testbed.results.runfolder import RunFolderError, precheck

    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        return bad_input(f"--out {args.out} and --resume {args.resume}: a resumed run goes on in its own folder",
                         file=log.errors)
    if args.resume and not Path(args.resume).is_dir():
        return bad_input(f"--resume {args.resume}: no such run folder", file=log.errors)
    out_dir = Path(args.resume or args.out or scenario.output)
    try:  # a folder in use or holding a run: said at once, before the workers' imports start
        precheck(out_dir, resume=bool(args.resume), overwrite=args.overwrite)
    except RunFolderError as exc:
        return bad_input(str(exc), file=log.errors)
    in_container = _server_container_wanted(scenario)
    if not in_container:  # (the server container's own `testbed run` writes the folder's run.log)
        log.attach(out_dir, append=bool(args.resume))
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

    try:
        run_dir.append(out_dir)
        if in_container:
            return _run_in_server_container(scenario, out_dir, args, log)
        summary = run_scenario(scenario, out_dir, replay_dir=args.replay_compute, resume=bool(args.resume),
                               overwrite=args.overwrite)  # (--quiet: the console is kept for run.log)
    except (ScenarioError, DataError, ReplayError, RunFolderError) as exc:
        return bad_input(str(exc), file=log.errors)
    except AssetError as exc:
        log.error(f"error: {exc}")
        return 1
    return 0 if summary.get("status") == "completed" else 1


def _print_json(args, run_dir: list[Path]) -> None:
    """--json: the run's summary.json with its folder and rounds, as one document on stdout
    (none when no run started: bad input is told on stderr, exit 2)."""
    if not args.json or not run_dir:
        return
    from testbed.cli.runsummary import summary_document

    document = summary_document(run_dir[0])
    if document is not None:
        print(document, flush=True)


def _server_container_wanted(scenario) -> bool:
    """backend: docker puts the server in its own container, unless this is that container."""
    if scenario.emulation.backend != "docker" or scenario.emulation.docker.server != "container":
        return False
    from testbed.sim.server_container import in_server_container

    return not in_server_container()


def _run_in_server_container(scenario, out_dir: Path, args, log: RunLog) -> int:
    from testbed.backends.docker import DockerUnavailable
    from testbed.sim.server_container import run_in_server_container

    try:
        return run_in_server_container(scenario, out_dir, replay_dir=args.replay_compute, quiet=args.quiet,
                                       resume=bool(args.resume), overwrite=args.overwrite)
    except DockerUnavailable as exc:
        log.error(f"error: {exc}")
        return 1
