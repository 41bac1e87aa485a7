"""Who made a folder the testbed leaves on the host: the process id recorded with it.

Every cgroup and temporary folder a run makes records the id of the process that made it, so
that a later start can tell a dead run's leftovers (that process gone) from a live run's
(testbed.host.cleanup). Where the testbed picks the folder's name, the id is in it, written
with the folder in one step and unique (a fresh uuid follows it)::

    testbed-[<kind>-]pid<process id>-<8 hex digits>[-<rest>]

A folder whose name another library picks (the forkserver's socket folder, ``pymp-*``) gets
a file ``testbed-owner.pid`` holding the id instead (``claim``).
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path

import psutil

from testbed.host.cgroup_files import PREFIX

OWNER_FILE = PREFIX + "owner.pid"  # the owner's id, in a folder named by someone else
_OWNED_NAME = re.compile(r"^" + re.escape(PREFIX) + r"(?:[a-z]+-)*pid(\d+)-[0-9a-f]{8}(?:-|$)")
_CLOCK_SLACK_S = 1.0  # process start times are known to a clock tick, folder times to the ns


def owner_tag() -> str:
    """``pid<this process>-<8 hex digits>``: this process as the owner, unique on every call."""
    return f"pid{os.getpid()}-{uuid.uuid4().hex[:8]}"


def owned_name(kind: str = "") -> str:
    """A unique folder name prefix recording this process: ``testbed-[<kind>-]pid<id>-<hex>``."""
    return PREFIX + (f"{kind}-" if kind else "") + owner_tag()


def owned_tempdir(kind: str) -> Path:
    """A fresh temporary folder ``testbed-<kind>-pid<id>-<hex>-<random>`` owned by this process."""
    return Path(tempfile.mkdtemp(prefix=owned_name(kind) + "-"))


def claim(folder: Path) -> None:
    """Record this process as the owner of ``folder`` (named by someone else)."""
    (folder / OWNER_FILE).write_text(f"{os.getpid()}\n")


def recorded_owner(folder: Path) -> int | None:
    """The owner's process id recorded with ``folder`` (its name, else its owner file); None
    where none is recorded: not the testbed's, or not yet claimed."""
    match = _OWNED_NAME.match(folder.name)
    if match is not None:
        return int(match.group(1))
    try:
        text = (folder / OWNER_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def owner_alive(pid: int, changed_unix: float) -> bool:
    """Whether process ``pid``, recorded as the owner of a folder last changed at
    ``changed_unix``, still runs. A process of that id that started after the folder last
    changed is another one (the id was reused): the owner is dead. Where it cannot be told
    (no permission, a folder time from before boot), the owner counts as alive."""
    try:
        started_unix = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    reused = changed_unix >= psutil.boot_time() and started_unix > changed_unix + _CLOCK_SLACK_S
    return not reused
