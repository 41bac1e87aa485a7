"""Who owns a run folder, and what state the run in it is in.

A run takes the folder's lock (``filelock.FileLock`` on ``DIR/.lock``) before it writes
anything, and writes its pid and host beside it (``DIR/.owner.json``): a second run on the
same folder is refused, naming the holder. The lock is an OS lock on an open file: a process
killed by any signal releases it. A folder that already holds a run is reused only when the
user asks: ``--resume`` (go on from its checkpoint) or ``--overwrite`` (start over).

``summary.json``'s ``status`` is ``running`` while a run goes on, then ``completed``,
``interrupted`` (Ctrl-C, SIGTERM), ``crashed`` (an error) or ``failed`` (ended by a check:
divergence, an input rejected late). A folder left ``running`` by a process that no longer
exists reads as ``interrupted`` (:func:`run_status`) and can be resumed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"
OWNER_NAME = ".owner.json"
STATUSES = ("running", "completed", "interrupted", "crashed", "failed")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (held by another run, or holding a run)."""


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The folder's summary.json; None if it has none or it cannot be read."""
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _owner_alive(run_dir: Path, pid: Any) -> bool:
    """Whether the run's recorded process still runs (a reused pid is not it:
    testbed.host.ownership.owner_alive, against the time summary.json last changed)."""
    from testbed.host.ownership import owner_alive

    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        changed_unix = (Path(run_dir) / "summary.json").stat().st_mtime
    except OSError:
        changed_unix = 0.0
    return owner_alive(pid, changed_unix)


def run_status(run_dir: Path, summary: dict[str, Any] | None = None) -> str:
    """The run's status as it truly is: `running` only while its process lives (on this host;
    a run of another host is taken at its word)."""
    summary = summary if summary is not None else read_summary(run_dir)
    if summary is None:
        return "interrupted" if (Path(run_dir) / "scenario.yaml").is_file() else "none"
    status = str(summary.get("status", "none"))
    if status == "running" and summary.get("host") == socket.gethostname() and \
            not _owner_alive(run_dir, summary.get("pid")):
        return "interrupted"
    return status


def holds_run(run_dir: Path) -> bool:
    """Whether the folder holds (part of) a run."""
    return any((Path(run_dir) / name).exists() for name in ("summary.json", "rounds.csv"))


def precheck(run_dir: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """claim()'s refusals, told before anything heavy starts (claim() still decides)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if run_dir.exists():
            raise RunFolderError(f"{run_dir}: not a folder")
        return
    with claim(run_dir, resume=resume or overwrite, overwrite=False):  # empties nothing
        pass


@contextlib.contextmanager
def claim(run_dir: Path, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Hold the run folder for one run. RunFolderError when another run holds it, or when it
    holds a run and neither `resume` nor `overwrite` was asked for. `overwrite` empties it."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(f"{run_dir}: in use by another run ({_holder(run_dir)}); wait for it to end "
                             "or choose another --out") from None
    try:
        if holds_run(run_dir) and not (resume or overwrite):
            raise RunFolderError(f"{run_dir}: holds a run (status {run_status(run_dir)}); pass --resume to go "
                                 "on from its last completed round, or --overwrite to start over")
        if overwrite:
            _empty(run_dir)
        (run_dir / OWNER_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        yield run_dir
    finally:
        with contextlib.suppress(OSError):
            (run_dir / OWNER_NAME).unlink()
        lock.release()


def _holder(run_dir: Path) -> str:
    try:
        owner = json.loads((run_dir / OWNER_NAME).read_text())
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def _empty(run_dir: Path) -> None:
    """Remove everything a previous run left in the folder (the lock stays: it is ours)."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
