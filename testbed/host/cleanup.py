"""Leftovers of dead runs: the cgroups and temporary folders a killed run could not remove.

A run killed with SIGKILL removes nothing it made: its client cgroups (testbed.host.cgroups),
its data-parallel rendezvous folder, the forkserver's socket folder, a worker's ONNX export
folder. ``remove_stale()`` removes, at the next start, every such folder whose recorded owner
(testbed.host.ownership) no longer runs, and keeps everything else: what a live process made
(a concurrent run's too), a folder with no recorded owner (not the testbed's, or one from
before owners were recorded), and a cgroup that still holds processes (a dead run's worker
that has not exited yet: a later start removes it).

Where it looks: the temporary directory (``tempfile.gettempdir()``), and the cgroups this
process is in, one per hierarchy, where client groups are made (the parent of the v2
supervisor leaf, where this process was moved there).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from testbed.host.cgroup_files import PREFIX, SUPERVISOR_LEAF, CgroupError, _pids
from testbed.host.cgroup_hierarchy import _locate
from testbed.host.ownership import owner_alive, recorded_owner

_MP_FOLDER = "pymp-"  # multiprocessing's temporary folder (the forkserver's socket), claimed by a file


@dataclass(frozen=True)
class StaleReport:
    cgroups: tuple[Path, ...] = ()  # group folders removed (cgroup v1: one per hierarchy)
    temp_folders: tuple[Path, ...] = ()  # temporary folders removed
    pids: tuple[int, ...] = ()  # their owners, dead, ascending

    @property
    def cgroup_count(self) -> int:
        """Groups removed, a group made in several v1 hierarchies counted once."""
        return len({path.name for path in self.cgroups})

    @property
    def notice(self) -> str | None:
        """One line for the run's progress, or None when nothing was removed."""
        if not self.cgroups and not self.temp_folders:
            return None
        pids = ", ".join(str(pid) for pid in self.pids)
        return (f"removed {_count(self.cgroup_count, 'stale cgroup')} and "
                f"{_count(len(self.temp_folders), 'temp folder')} of dead runs (pids {pids})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def remove_stale(progress: Callable[[str], None] | None = None, *, temp_root: Path | None = None,
                 cgroup_parents: Iterable[Path] | None = None) -> StaleReport:
    """Remove the cgroups and temporary folders of dead runs; ``progress`` gets the notice line
    when anything was removed. ``temp_root`` and ``cgroup_parents`` default to this host's."""
    root = Path(tempfile.gettempdir()) if temp_root is None else temp_root
    parents = _cgroup_parents() if cgroup_parents is None else tuple(cgroup_parents)
    dead: set[int] = set()
    groups = tuple(group for parent in dict.fromkeys(parents) for group in _stale_groups(parent, dead))
    folders = tuple(_stale_folders(root, dead))
    report = StaleReport(groups, folders, tuple(sorted(dead)))
    if progress is not None and report.notice is not None:
        progress(report.notice)
    return report


def _cgroup_parents() -> tuple[Path, ...]:
    """Where this process's client groups would be made, and where an earlier run's were."""
    try:
        found = _locate(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())
    except OSError:
        return ()
    parents: list[Path] = []
    for here in (found.memory_parent, found.cpu_parent):
        if here is not None:
            parents += [here.parent, here] if here.name == SUPERVISOR_LEAF else [here]
    return tuple(dict.fromkeys(parents))


def _dead_owner(folder: Path) -> int | None:
    """The recorded owner of ``folder`` if it no longer runs; None if alive or unknown."""
    pid = recorded_owner(folder)
    if pid is None:
        return None
    try:
        changed_unix = folder.stat().st_mtime
    except OSError:
        return None
    return None if owner_alive(pid, changed_unix) else pid


def _stale_groups(parent: Path, dead: set[int]) -> list[Path]:
    """Remove the empty testbed groups of dead owners directly below ``parent``."""
    removed = []
    for group in _entries(parent, PREFIX):
        pid = _dead_owner(group)
        if pid is None:
            continue
        try:
            if _pids(group):
                continue  # a worker of the dead run still exiting
            os.rmdir(group)
        except (OSError, CgroupError):
            continue  # gone meanwhile, or still busy: a later start tries again
        removed.append(group)
        dead.add(pid)
    return removed


def _stale_folders(root: Path, dead: set[int]) -> list[Path]:
    """Remove this user's temporary folders, below ``root``, of dead owners."""
    removed = []
    uid = os.geteuid()
    for folder in _entries(root, PREFIX) + _entries(root, _MP_FOLDER):
        try:
            if folder.is_symlink() or folder.lstat().st_uid != uid:
                continue
        except OSError:
            continue
        pid = _dead_owner(folder)
        if pid is None:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
            dead.add(pid)
    return removed


def _entries(parent: Path, prefix: str) -> list[Path]:
    """The folders directly below ``parent`` whose names start with ``prefix`` (none if unreadable)."""
    try:
        with os.scandir(parent) as entries:
            return sorted(Path(e.path) for e in entries
                          if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False))
    except OSError:
        return []
