"""The ``testbed`` command: run, validate, profiles, calibrate, assets."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from testbed.cli import net as netcli  # noqa: E402  (light: imports only the network package)

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed", description="Edge-device emulation testbed for federated LLM fine-tuning")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a scenario into a run directory")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--out", help="run directory (default: the scenario's `output`)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. framework.rounds=2 or fleet.0.count=3 (repeatable)")
    run.add_argument("--replay-compute", metavar="RUN_DIR",
                     help="reuse the measured compute durations of a previous run of this scenario")
    run.add_argument("--quiet", action="store_true", help="no progress bar or table")

    val = sub.add_parser("validate", help="check a scenario without running it")
    val.add_argument("scenario")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    cmp = sub.add_parser("compare", help="run several frameworks on the same fleet, data and seed; "
                                          "write DIR/comparison.csv and .md")
    cmp.add_argument("scenario", help="scenario YAML file")
    cmp.add_argument("--frameworks", default="fedllm,kd,split", help="comma-separated (default fedllm,kd,split)")
    cmp.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: mean and 95%% CI (default: the scenario's)")
    _add_multi_run_options(cmp, out_help="folder of the run folders (DIR/<framework>/) and the comparison")

    st = sub.add_parser("stress", help="run a scenario over a grid of overrides; write DIR/stress.csv")
    st.add_argument("scenario", help="scenario YAML file")
    st.add_argument("--sweep", dest="sweeps", action="append", required=True, metavar="KEY=V1,V2,...",
                    help="values of one scenario key (repeatable: several sweeps form a grid)")
    _add_multi_run_options(st, out_help="folder of the run folders (DIR/<key=value,...>/) and stress.csv")

    comp = sub.add_parser("compose", help="write a compose file: one service per client (client-<id>) and a server")
    comp.add_argument("scenario", help="scenario YAML file")
    comp.add_argument("-o", "--output", required=True, help="compose file to write")
    comp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    comp.add_argument("--out", help="the server's run directory (default: the scenario's `output`)")
    comp.add_argument("--port", type=int, default=8765, help="the server endpoint's port on 127.0.0.1 (default 8765)")

    sub.add_parser("profiles", help="print the device and link catalogs")

    cal = sub.add_parser("calibrate", help="measure this host's sustained compute and memory bandwidth")
    cal.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as client workers use)")
    cal.add_argument("--seconds", type=float, default=2.0, help="measurement time per kernel")
    cal.add_argument("--compare", action="store_true",
                     help="also predict published small-LLM decode speeds of profiled devices (roofline) and print the ratios")

    sub.add_parser("assets", help="fetch and convert the bundled model and data (offline afterwards)")

    rep = sub.add_parser("report", help="write an HTML report (DIR/report/index.html) of a run or compare folder")
    rep.add_argument("dir", help="run folder or compare folder")
    netcli.add_parser(sub)
    return p


def _add_multi_run_options(cmd: argparse.ArgumentParser, out_help: str) -> None:
    """The options `compare` and `stress` share."""
    cmd.add_argument("--out", required=True, help=out_help)
    cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field in every run (repeatable)")
    cmd.add_argument("--target-accuracy", type=float,
                     help="accuracy for time_to_target_s (default: 0.9 x the best final accuracy compared)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bars or tables of the runs")


def _interrupt_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout` or a scheduler) ends a run like Ctrl-C: the run directory
    records it and the workers and cgroups are cleaned up."""
    import signal

    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        _interrupt_on_sigterm()
    handler = {"run": cmd_run, "validate": cmd_validate, "profiles": cmd_profiles,
               "calibrate": cmd_calibrate, "assets": cmd_assets, "report": cmd_report,
               "compare": cmd_compare, "stress": cmd_stress, "compose": cmd_compose,
               "net": netcli.run}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The `testbed` command: main(), then the exit handlers, then the process ends without
    the interpreter's teardown (freeing torch's and transformers' modules one by one took
    1.1 s here, after every file of the run was written and every worker stopped)."""
    import atexit

    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)


def _bad_input(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load(args):
    from testbed.config.scenario import load_scenario

    return load_scenario(args.scenario, args.overrides)


def cmd_validate(args) -> int:
    from testbed.config.scenario import ScenarioError

    try:
        scenario = _load(args)
    except ScenarioError as exc:
        return _bad_input(str(exc))
    print(f"{args.scenario}: ok ({scenario.framework.name}, {scenario.n_clients} clients, "
          f"{scenario.framework.rounds} rounds, model {scenario.model})")
    return 0


def cmd_run(args) -> int:
    from testbed.config.scenario import ScenarioError

    try:
        scenario = _load(args)
    except ScenarioError as exc:
        return _bad_input(str(exc))
    if scenario.emulation.backend == "process":  # first: its imports overlap all that follows, ours too
        from testbed.config.registry import framework_module
        from testbed.host.forkserver import worker_context

        worker_context((framework_module(scenario.framework.name),))
    with _collector_paused():  # pandas, torch and the runner: long-lived objects, no need to walk them
        from testbed.ml.assets import AssetError
        from testbed.ml.data import DataError
        from testbed.sim.replay import ReplayError
        from testbed.sim.session import run_scenario

    try:
        out_dir = Path(args.out or scenario.output)
        if _server_container_wanted(scenario):
            return _run_in_server_container(scenario, out_dir, args)
        summary = run_scenario(scenario, out_dir, replay_dir=args.replay_compute, quiet=args.quiet)
    except (ScenarioError, DataError, ReplayError) as exc:
        return _bad_input(str(exc))
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if summary.get("status") == "completed" else 1


@contextlib.contextmanager
def _collector_paused():
    """Imports without the cyclic garbage collector, their objects frozen after (Python's
    `gc.freeze`): its full collections walked every object imported so far, 0.2-0.3 s of the
    runner's 2 s of imports here, on a start-up that shares 2 cores with the workers' own."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


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
        return run_in_server_container(scenario, out_dir, replay_dir=args.replay_compute, quiet=args.quiet)
    except DockerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_compose(args) -> int:
    from testbed.backends.compose import write_compose
    from testbed.config.scenario import ScenarioError

    try:
        scenario = _load(args)
    except ScenarioError as exc:
        return _bad_input(str(exc))
    path = write_compose(scenario, args.scenario, args.output, args.overrides, out_dir=args.out, port=args.port)
    print(f"written: {path} ({scenario.n_clients} client services + server)", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from testbed.config.scenario import ScenarioError
    from testbed.results.compare import CompareError, parse_frameworks, parse_seeds
    from testbed.sim.batch import compare

    _interrupt_on_sigterm()
    out_dir = Path(args.out)
    try:
        table = compare(args.scenario, out_dir, frameworks=parse_frameworks(args.frameworks),
                        seeds=parse_seeds(args.seeds), overrides=args.overrides,
                        target_accuracy=args.target_accuracy, quiet=args.quiet)
    except (CompareError, ScenarioError) as exc:
        return _bad_input(str(exc))
    print((out_dir / "comparison.md").read_text(), end="")
    print(f"written: {out_dir / 'comparison.csv'}, {out_dir / 'comparison.md'}", file=sys.stderr)
    return 0 if (table["status"] == "completed").all() else 1


def cmd_stress(args) -> int:
    from testbed.config.scenario import ScenarioError
    from testbed.results.compare import CompareError, markdown_table
    from testbed.results.stress import parse_sweep
    from testbed.sim.batch import stress

    _interrupt_on_sigterm()
    out_dir = Path(args.out)
    try:
        sweeps = [parse_sweep(text) for text in args.sweeps]
        table = stress(args.scenario, out_dir, sweeps=sweeps, overrides=args.overrides,
                       target_accuracy=args.target_accuracy, quiet=args.quiet)
    except (CompareError, ScenarioError) as exc:
        return _bad_input(str(exc))
    print(markdown_table(table, [s.key for s in sweeps]), end="")
    print(f"written: {out_dir / 'stress.csv'}", file=sys.stderr)
    return 0 if (table["status"] == "completed").all() else 1


def cmd_profiles(args) -> int:
    from rich.console import Console

    from device_profiles import catalog_tables

    console = Console()
    for table in catalog_tables():
        console.print(table)
    return 0


def cmd_calibrate(args) -> int:
    import json

    from testbed.host.calibration import calibrate_host
    from testbed.ml.assets import cache_dir

    cal = calibrate_host(threads=args.threads, seconds=args.seconds)
    path = cache_dir() / f"calibration-{args.threads}t.json"
    path.write_text(json.dumps(cal.to_dict(), indent=2) + "\n")
    print(json.dumps(cal.to_dict(), indent=2))
    print(f"stored in {path}", file=sys.stderr)
    if args.compare:
        from rich.console import Console

        from testbed.results.reference_check import compare_with_published, format_predictions, host_estimate

        console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
        console.print(format_predictions(compare_with_published(cal), host_estimate(cal)))
    return 0


def cmd_assets(args) -> int:
    from testbed.ml.assets import bbc_news_dir, smollm2_dir, tiny_llama_dir

    for name, fn in (("smollm2-135m", smollm2_dir), ("tiny-llama", tiny_llama_dir), ("bbc-news", bbc_news_dir)):
        print(f"{name}: {fn()}")
    return 0


def cmd_report(args) -> int:
    from testbed.results.report import ReportError, build_report

    try:
        index = build_report(args.dir)
    except ReportError as exc:
        return _bad_input(str(exc))
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
