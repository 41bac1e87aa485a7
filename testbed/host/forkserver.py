"""The forkserver client workers fork from, started as early as a run knows it needs one.

It imports torch, transformers, peft and the framework's module once (about 4 s on 2 cores,
with the garbage collector paused: testbed.host.zygote) and every worker forks from it
without importing anything. `testbed run` starts it right after reading the scenario, so it
imports while the runner itself does, on the other core, instead of after. Light on purpose:
importing this module imports neither torch nor the backends.

Its socket lives in multiprocessing's temporary folder (``pymp-*``), removed when this process
exits normally; the folder is claimed for this process (testbed.host.ownership), so that a
killed run's is removed at the next start (testbed.host.cleanup).
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

PRELOAD = ("testbed.host.zygote", "torch", "transformers", "peft", "testbed.backends.process")


def worker_context(modules: tuple[str, ...] = ()) -> mp.context.BaseContext:
    """Where the platform has it, the forkserver context, its server started (or already
    running) with PRELOAD and `modules` imported; a fresh interpreter (spawn) elsewhere.
    The forkserver is single-threaded and has run no torch op, so forking it is safe. Once it
    runs, its preload is fixed: a module named later is imported by each worker instead."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    from multiprocessing import forkserver, util

    from testbed.host.ownership import claim

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*PRELOAD, *modules])
    claim(Path(util.get_temp_dir()))  # where the server's socket goes
    forkserver.ensure_running()  # returns at once: the server imports in the background
    return ctx
