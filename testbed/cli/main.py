"""The ``testbed`` command: the parser of all subcommands, ``main`` and ``console_main``.

Each subcommand is its own module here, with ``add_parser(subparsers)`` and its handler:
run, validate, compare, stress, compose, profiles, calibrate, assets, report and net; what
several share is in ``common``. Every ``testbed`` command imports all of them, so they import
the project's heavy modules (pandas, torch, the runner) inside their handlers, never at the top.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# light: the subcommand modules import only the standard library, testbed.cli.common and,
# for net, the network package
from testbed.cli import assets, calibrate, compare, compose, profiles, report, run, stress, validate
from testbed.cli import net as netcli
from testbed.cli.common import (
    EXIT_BAD_INPUT,  # noqa: F401  (re-exported: the bad-input exit code)
    bad_input,
)
from testbed.cli.common import collector_paused as _collector_paused  # noqa: F401  (re-exported for tests)
from testbed.results.runlog import package_version
from testbed.config.extras import missing_extra_message

HANDLERS = {"run": run.cmd_run, "validate": validate.cmd_validate, "compare": compare.cmd_compare,
            "stress": stress.cmd_stress, "compose": compose.cmd_compose, "profiles": profiles.cmd_profiles,
            "calibrate": calibrate.cmd_calibrate, "assets": assets.cmd_assets, "report": report.cmd_report,
            "net": netcli.run}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed", description="Edge-device emulation testbed for federated LLM fine-tuning")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (run, validate, compare, stress, compose, profiles, calibrate, assets, report, netcli):
        module.add_parser(sub)  # in this order in `testbed --help`
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # a module of an extra not installed: one line naming the extra, exit 2
        message = missing_extra_message(exc)
        if message is None:
            raise
        return bad_input(message)


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


if __name__ == "__main__":
    sys.exit(main())
