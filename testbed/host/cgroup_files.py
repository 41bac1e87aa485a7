"""Low-level cgroup file operations: one-value writes, process moves, making and removing groups.

Shared by the hierarchy probing (testbed/host/cgroup_hierarchy.py) and the client groups
(testbed/host/cgroups.py). Every directory made here starts with ``PREFIX``.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

PREFIX = "testbed-"  # every cgroup directory the testbed makes starts with this
SUPERVISOR_LEAF = PREFIX + "supervisor"  # v2: where this cgroup's own processes move
_RMDIR_TIMEOUT_S = 2.0  # an exiting process leaves its cgroup a moment after it is killed


class CgroupError(RuntimeError):
    """A cgroup file or directory could not be read, written, made or removed."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


# --- File helpers ---------------------------------------------------------------------------


def _rmdir_quietly(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _read_optional(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CgroupError(path, f"cannot read: {e.strerror}") from e


def _write(path: Path, value: object) -> None:
    """One write(2) of ``value``: cgroup files take one value per write."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(path, f"cannot write {value!r}: {e.strerror}") from e


def _write_if_present(path: Path, value: object) -> None:
    """Swap settings: skipped where the kernel lacks the file or refuses the value."""
    if not path.exists():
        return
    try:
        _write(path, value)
    except CgroupError as e:
        if not isinstance(e.__cause__, OSError) or e.__cause__.errno != errno.EINVAL:
            raise


def _counter(text: str | None, key: str) -> int:
    """``key N`` from a flat-keyed cgroup file (0 when the file or the key is absent)."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


def _pids(group: Path) -> list[int]:
    return [int(p) for p in (_read_optional(group / "cgroup.procs") or "").split()]


def _move_pids(source: Path, target: Path) -> None:
    """Move every process of ``source`` into ``target``; ones that already exited are skipped."""
    for pid in _pids(source):
        try:
            _write(target / "cgroup.procs", pid)
        except CgroupError as e:
            if not isinstance(e.__cause__, ProcessLookupError):
                raise


def _follow(source: Path, target: Path) -> None:
    """Put every process of ``source`` into ``target`` too (v1: another hierarchy), again until
    none is missing, so that children forked meanwhile are caught."""
    for _ in range(10):
        missing = set(_pids(source)) - set(_pids(target))
        if not missing:
            return
        for pid in missing:
            try:
                _write(target / "cgroup.procs", pid)
            except CgroupError as e:
                if not isinstance(e.__cause__, ProcessLookupError):
                    raise


def _destroy(group: Path, home: Path) -> None:
    """Move the group's processes to ``home``, then remove it (retrying while they exit)."""
    deadline = time.monotonic() + _RMDIR_TIMEOUT_S
    while True:
        if not group.exists():
            return
        _move_pids(group, home)
        try:
            os.rmdir(group)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(group, f"cannot remove: {e.strerror}") from e
            time.sleep(0.02)


def _fresh_dir(group: Path, home: Path) -> Path:
    """Make ``group``, first removing a leftover of the same name."""
    _destroy(group, home)
    try:
        os.mkdir(group)
    except OSError as e:
        raise CgroupError(group, f"cannot make: {e.strerror}") from e
    return group


# --- cgroup v2 specifics --------------------------------------------------------------------


def _v2_is_root(group: Path) -> bool:
    return not (group / "cgroup.type").exists()  # the root cgroup has no type file


def _v2_home(parent: Path) -> Path:
    """Where processes of ``parent``'s subtree can live: the parent, or its supervisor leaf."""
    if _v2_is_root(parent) or not (_read_optional(parent / "cgroup.subtree_control") or "").split():
        return parent
    return _make_leaf(parent / SUPERVISOR_LEAF)


def _make_leaf(leaf: Path) -> Path:
    """``leaf``, made if missing (kept if present: it may hold this very process)."""
    try:
        os.mkdir(leaf)
    except FileExistsError:
        pass
    except OSError as e:
        raise CgroupError(leaf, f"cannot make: {e.strerror}") from e
    return leaf


def _v2_enable(parent: Path, controllers: list[str]) -> None:
    """Enable ``controllers`` for ``parent``'s children, moving its own processes out if needed."""
    enabled = (_read_optional(parent / "cgroup.subtree_control") or "").split()
    missing = [c for c in controllers if c not in enabled]
    if not missing:
        return
    change = " ".join("+" + c for c in missing)
    try:
        _write(parent / "cgroup.subtree_control", change)
    except CgroupError as e:
        if not isinstance(e.__cause__, OSError) or e.__cause__.errno != errno.EBUSY:
            raise
        leaf = _make_leaf(parent / SUPERVISOR_LEAF)
        _move_pids(parent, leaf)  # "no internal processes": the parent must be empty
        _write(parent / "cgroup.subtree_control", change)

