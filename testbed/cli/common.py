"""What several subcommands of the ``testbed`` command share: the bad-input exit, loading the
scenario named on the command line, SIGTERM as Ctrl-C, imports with the collector paused, and
the options of ``compare`` and ``stress`` and their ``--json`` document.

Light on purpose: every ``testbed`` command imports it, so the project's heavy modules are
imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys

EXIT_BAD_INPUT = 2


def bad_input(message: str, file=None) -> int:
    """Print ``error: message`` on stderr (or ``file``), as one line; the exit code of bad input (2)."""
    line = " ".join(str(message).splitlines())
    if not line.isprintable():
        line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    print(f"error: {line}", file=file or sys.stderr)
    return EXIT_BAD_INPUT


def load(args):
    """The scenario of ``args.scenario`` with ``args.overrides`` (``--set``) applied, checked
    against its model, data and this host (testbed.ml.preflight.check_scenario) before anything
    starts. Every problem is a ScenarioError whose message is one ``file: field: problem`` line.

    Last resort, in addition to those checks and never instead of them: an exception of
    another kind while reading or checking input becomes a ScenarioError naming
    ``(internal)``, so that bad input never ends in a traceback; the fuzz tests
    (tests/fuzzing.py) fail whenever this is what answers."""
    from testbed.config.scenario import ScenarioError, load_scenario
    from testbed.ml.preflight import check_scenario

    try:
        scenario = load_scenario(args.scenario, args.overrides)
        check_scenario(scenario, str(args.scenario))
    except ScenarioError:
        raise
    except (Exception, RecursionError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ScenarioError(f"{args.scenario}: (internal): checking this input failed unexpectedly "
                            f"({type(exc).__name__}: {detail}); please report it") from exc
    return scenario


def interrupt_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout` or a scheduler) ends a run like Ctrl-C: the run directory
    records it and the workers and cgroups are cleaned up."""
    import signal

    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


@contextlib.contextmanager
def collector_paused():
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


def add_multi_run_options(cmd: argparse.ArgumentParser, out_help: str) -> None:
    """The options `compare` and `stress` share."""
    cmd.add_argument("--out", required=True, help=out_help)
    cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field in every run (repeatable)")
    cmd.add_argument("--target", metavar="METRIC=VALUE",
                     help="time_to_target_s: the first round whose METRIC reaches VALUE (>= for accuracy, rouge_l, "
                          "exact_match, student_accuracy; <= for perplexity, eval_loss, student_perplexity), e.g. "
                          "perplexity=20 or rouge_l=0.3 (default: the task's metric, accuracy or perplexity, at "
                          "0.9 x the best final value compared, 1.1 x the lowest for perplexity)")
    cmd.add_argument("--target-accuracy", type=float, metavar="X",
                     help="the same as --target accuracy=X (not with --target)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bars or tables of the runs")
    cmd.add_argument("--json", action="store_true",
                     help="print the table as one JSON document on stdout ({out_dir, rows: one object per row}) "
                          "instead of markdown; the runs' progress goes to stderr")
    again = cmd.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="skip the runs in DIR that completed and go on with the others after their last round")
    again.add_argument("--overwrite", action="store_true", help="start over the runs DIR already holds")


def table_document(table, out_dir) -> str:
    """``compare``/``stress --json``: the table as one strict JSON document (NaN as null)."""
    import json

    rows = json.loads(table.to_json(orient="records"))  # pandas: NaN -> null, numpy numbers -> JSON
    return json.dumps({"out_dir": str(out_dir), "rows": rows}, allow_nan=False)
