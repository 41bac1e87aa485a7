"""One Linux control group per emulated client: a memory limit and a CPU quota.

``detect()`` finds which cgroup version this process can use and whether it may make groups;
``ClientCgroup`` makes one client's group, moves processes into it, reads its OOM-kill count
and peak memory, and removes it again.

Where groups are made:

- cgroup v1 (separate ``memory`` and ``cpu`` hierarchies): a ``testbed-<name>`` child of the
  memory cgroup this process is in, and one of the cpu cgroup this process is in.
- cgroup v2 (one unified hierarchy): one leaf ``testbed-<name>`` below the cgroup this process
  is in. The needed controllers are enabled in that cgroup's ``cgroup.subtree_control``. The
  kernel refuses that while a non-root cgroup still holds processes ("no internal processes"),
  so those processes are first moved into a leaf ``testbed-supervisor`` beside the clients.

A group is fresh on every ``create()``: a leftover of the same name (from a crashed run) has
its processes moved back to the parent and is removed first, so counters start at zero.
Processes should be added before they allocate: memory a process already holds stays charged
to its old group.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

PREFIX = "testbed-"  # every directory this module makes starts with this
SUPERVISOR_LEAF = PREFIX + "supervisor"  # v2: where this cgroup's own processes move
CFS_PERIOD_US = 100_000  # CPU quota accounting period, microseconds
_MIN_QUOTA_US = 1_000  # the kernel's smallest CFS quota
_MAX_NAME_CHARS = 100
_RMDIR_TIMEOUT_S = 2.0  # an exiting process leaves its cgroup a moment after it is killed


class CgroupError(RuntimeError):
    """A cgroup file or directory could not be read, written, made or removed."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True)
class CgroupSupport:
    version: Literal[1, 2] | None  # cgroup version in use; None when none is usable
    memory_writable: bool  # a memory-limited child group can be made
    cpu_writable: bool  # a CPU-quota child group can be made
    reason: str = ""  # why not, when either flag is False
    memory_parent: Path | None = None  # the memory cgroup this process is in (v2: the unified one)
    cpu_parent: Path | None = None  # the cpu cgroup this process is in (v2: same as memory_parent)


# --- Finding the hierarchies -------------------------------------------------------------


@dataclass(frozen=True)
class _Mount:
    root: str  # path inside the hierarchy that is mounted (not "/" for bind-mounted subtrees)
    mountpoint: Path
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]  # super options; for v1 they name the controllers


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _parse_mountinfo(text: str) -> list[_Mount]:
    """The cgroup mounts listed in /proc/self/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        head, tail = before.split(), after.split()
        if not sep or len(head) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(tail[2].split(","))
        mounts.append(_Mount(_unescape(head[3]), Path(_unescape(head[4])), tail[0], options))
    return mounts


def _parse_proc_cgroup(text: str) -> dict[str, str]:
    """Controller -> cgroup path from /proc/self/cgroup text; key "" is the v2 hierarchy."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _cgroup_dir(mount: _Mount, path: str) -> Path:
    if mount.root != "/" and (path == mount.root or path.startswith(mount.root + "/")):
        path = path[len(mount.root) :]
    return mount.mountpoint / path.lstrip("/")


def _v1_dir(mounts: list[_Mount], paths: dict[str, str], controller: str) -> Path | None:
    mount = next((m for m in mounts if m.fstype == "cgroup" and controller in m.options), None)
    if mount is None or controller not in paths:
        return None
    return _cgroup_dir(mount, paths[controller])


def _locate(mountinfo: str, proc_cgroup: str) -> CgroupSupport:
    """Which version to use and the cgroups this process is in (no probing: flags False)."""
    mounts, paths = _parse_mountinfo(mountinfo), _parse_proc_cgroup(proc_cgroup)
    memory, cpu = _v1_dir(mounts, paths, "memory"), _v1_dir(mounts, paths, "cpu")
    if memory is not None or cpu is not None:  # v1, or hybrid with controllers on v1
        return CgroupSupport(1, False, False, "not probed", memory, cpu)
    unified = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if unified is None or "" not in paths:
        why = "no cgroup v1 memory/cpu hierarchy and no cgroup2 mount in /proc/self/mountinfo"
        return CgroupSupport(None, False, False, why)
    here = _cgroup_dir(unified, paths[""])
    return CgroupSupport(2, False, False, "not probed", here, here)


# --- Probing --------------------------------------------------------------------------------


def _probe(parent: Path | None, controller: str, control_file: str | None) -> str:
    """Why a child of ``parent`` cannot be made ("" when it can)."""
    if parent is None:
        return f"no {controller} cgroup hierarchy is mounted"
    probe = parent / f"{PREFIX}probe-{os.getpid()}"
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError as e:
        return f"cannot make a {controller} cgroup: mkdir {probe}: {e.strerror}"
    try:
        if control_file is not None and not (probe / control_file).exists():
            return f"{probe / control_file} is missing"
        return ""
    finally:
        _rmdir_quietly(probe)


def _rmdir_quietly(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _probe_v2(parent: Path, controller: str) -> str:
    available = (_read_optional(parent / "cgroup.controllers") or "").split()
    if controller not in available:
        return f"{controller} controller not available in {parent / 'cgroup.controllers'}"
    return _probe(parent, controller, None)


def detect() -> CgroupSupport:
    """Which cgroup version this process can use, and whether it may make limited groups."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError as e:
        return CgroupSupport(None, False, False, f"cannot read /proc: {e}")
    found = _locate(mountinfo, proc_cgroup)
    if found.version is None:
        return found
    if found.version == 1:
        memory_why = _probe(found.memory_parent, "memory", "memory.limit_in_bytes")
        cpu_why = _probe(found.cpu_parent, "cpu", "cpu.cfs_quota_us")
    else:
        assert found.memory_parent is not None
        memory_why = _probe_v2(found.memory_parent, "memory")
        cpu_why = _probe_v2(found.memory_parent, "cpu")
    reason = "; ".join(why for why in (memory_why, cpu_why) if why)
    return CgroupSupport(
        found.version, not memory_why, not cpu_why, reason, found.memory_parent, found.cpu_parent
    )


# --- File helpers ---------------------------------------------------------------------------


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


# --- The client group -----------------------------------------------------------------------


def sanitize_name(name: str) -> str:
    """A directory-safe form of ``name``: letters, digits, '_', '-', '.'; no leading dot.

    A name that had to change gets a hash of the original appended, so that distinct names
    ("a/b", "a_b") never share a group.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:_MAX_NAME_CHARS]
    if not safe.strip("_.-"):
        raise ValueError(f'"name" must contain a letter or digit, got {name!r}.')
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe


class ClientCgroup:
    """One client's cgroup(s). Make with ``create()`` (or ``with``), undo with ``remove()``.

    Where memory groups can be made, one is made even without a limit, so ``oom_kills()`` and
    ``peak_memory_bytes()`` still count; a CPU group only with a quota. Without cgroup support
    and without limits, ``create()`` and ``add()`` do nothing. Names must be unique per run:
    ``create()`` clears out any group of the same name.
    """

    def __init__(
        self,
        name: str,
        *,
        memory_limit_bytes: int | None,
        cpu_quota_cores: float | None,
        support: CgroupSupport | None = None,
    ) -> None:
        if memory_limit_bytes is not None and memory_limit_bytes <= 0:
            raise ValueError(f'"memory_limit_bytes" must be > 0, got {memory_limit_bytes}.')
        if cpu_quota_cores is not None and cpu_quota_cores * CFS_PERIOD_US < _MIN_QUOTA_US:
            raise ValueError(f'"cpu_quota_cores" must be >= 0.01, got {cpu_quota_cores}.')
        self.dirname = PREFIX + sanitize_name(name)
        self.memory_limit_bytes = memory_limit_bytes
        self.cpu_quota_cores = cpu_quota_cores
        self._support = support
        self._groups: dict[str, tuple[Path, Path]] = {}  # role -> (group dir, home for its pids)
        self._created = False
        self._final: tuple[int, int | None] | None = None  # counters read just before removal

    @property
    def paths(self) -> tuple[Path, ...]:
        """Group directories made by ``create()`` and ``set_cpu_quota()`` (none before or after)."""
        return tuple(group for group, _ in self._groups.values())

    def create(self) -> None:
        """Make the group(s) and set the limits; raises CgroupError if a limit cannot be set."""
        if self._created:
            return
        support = self._support if self._support is not None else detect()
        self._support = support
        self._check(support)
        try:
            if support.version == 1:
                self._create_v1(support)
            elif support.version == 2:
                self._create_v2(support)
        except BaseException:
            self.remove()
            raise
        self._created, self._final = True, None

    def _check(self, support: CgroupSupport) -> None:
        where = support.memory_parent or Path("/sys/fs/cgroup")
        if self.memory_limit_bytes is not None and not support.memory_writable:
            raise CgroupError(where, f"cannot limit memory: {support.reason}")
        if self.cpu_quota_cores is not None and not support.cpu_writable:
            where = support.cpu_parent or where
            raise CgroupError(where, f"cannot set a CPU quota: {support.reason}")

    def _quota_us(self) -> int:
        assert self.cpu_quota_cores is not None
        return round(self.cpu_quota_cores * CFS_PERIOD_US)

    def _create_v1(self, support: CgroupSupport) -> None:
        if support.memory_writable and support.memory_parent is not None:
            home = support.memory_parent
            group = _fresh_dir(home / self.dirname, home)
            self._groups["memory"] = (group, home)
            if self.memory_limit_bytes is not None:
                _write(group / "memory.limit_in_bytes", self.memory_limit_bytes)
                _write_if_present(group / "memory.memsw.limit_in_bytes", self.memory_limit_bytes)
            _write_if_present(group / "memory.swappiness", 0)
        if self.cpu_quota_cores is not None and support.cpu_parent is not None:
            home = support.cpu_parent
            group = _fresh_dir(home / self.dirname, home)
            self._groups["cpu"] = (group, home)
            _write(group / "cpu.cfs_period_us", CFS_PERIOD_US)
            _write(group / "cpu.cfs_quota_us", self._quota_us())

    def _create_v2(self, support: CgroupSupport) -> None:
        parent = support.memory_parent
        assert parent is not None
        wanted = ["memory"] if support.memory_writable else []
        wanted += ["cpu"] if self.cpu_quota_cores is not None else []
        _v2_enable(parent, wanted)
        home = _v2_home(parent)
        group = _fresh_dir(parent / self.dirname, home)
        self._groups["memory" if support.memory_writable else "unified"] = (group, home)
        if self.memory_limit_bytes is not None:
            _write(group / "memory.max", self.memory_limit_bytes)
        if support.memory_writable:
            _write_if_present(group / "memory.swap.max", 0)
        if self.cpu_quota_cores is not None:
            _write(group / "cpu.max", f"{self._quota_us()} {CFS_PERIOD_US}")

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group(s)."""
        if not self._created:
            raise RuntimeError(f"{self.dirname}: call create() before add()")
        for group in self.paths:
            _write(group / "cgroup.procs", pid)

    def set_cpu_quota(self, cores: float | None) -> None:
        """Change (or add, or remove with None) the CPU quota of the created group, processes kept.

        cgroup v1: the cpu child group is made if missing, its quota written (-1 for None), and
        every process of the memory child moved into it (the cpu hierarchy is separate, so memory
        charges stay where they are). v2: ``cpu.max`` of the one group is written ("max" for
        None), after enabling ``cpu`` in the parent's ``cgroup.subtree_control`` if needed.
        Raises ValueError for a quota below the kernel's smallest, CgroupError (naming the file)
        where it cannot be set.
        """
        if cores is not None and not (math.isfinite(cores) and cores > 0):
            raise ValueError(f'"cores" must be a finite number > 0 or None, got {cores}.')
        if cores is not None and cores * CFS_PERIOD_US < _MIN_QUOTA_US:
            raise ValueError(f'"cores" must be >= 0.01, got {cores}.')
        if not self._created:
            raise RuntimeError(f"{self.dirname}: call create() before set_cpu_quota()")
        support = self._support
        assert support is not None  # set by create()
        has_cpu = "cpu" in self._groups or (
            support.version == 2 and self.cpu_quota_cores is not None
        )
        if cores is None and not has_cpu:
            self.cpu_quota_cores = None  # no quota was ever set: nothing to undo
            return
        if not support.cpu_writable:
            where = support.cpu_parent or support.memory_parent or Path("/sys/fs/cgroup")
            raise CgroupError(where, f"cannot set a CPU quota: {support.reason}")
        quota_us = -1 if cores is None else round(cores * CFS_PERIOD_US)
        if support.version == 1:
            self._set_cpu_quota_v1(support, quota_us)
        else:
            self._set_cpu_quota_v2(support, quota_us)
        self.cpu_quota_cores = cores

    def _set_cpu_quota_v1(self, support: CgroupSupport, quota_us: int) -> None:
        if "cpu" in self._groups:
            group, _ = self._groups["cpu"]
            _write(group / "cpu.cfs_quota_us", quota_us)
        else:
            home = support.cpu_parent
            assert home is not None  # cpu_writable
            group = _fresh_dir(home / self.dirname, home)
            try:
                _write(group / "cpu.cfs_period_us", CFS_PERIOD_US)
                _write(group / "cpu.cfs_quota_us", quota_us)
            except BaseException:
                _destroy(group, home)
                raise
            self._groups["cpu"] = (group, home)
        if "memory" in self._groups:
            _follow(self._groups["memory"][0], group)

    def _set_cpu_quota_v2(self, support: CgroupSupport, quota_us: int) -> None:
        parent = support.memory_parent
        assert parent is not None and self._groups  # create() made the one group
        role, (group, _) = next(iter(self._groups.items()))
        _v2_enable(parent, ["cpu"])
        # Enabling may have moved the parent's own processes into the supervisor leaf: that is
        # now where this group's processes go back to on remove().
        self._groups[role] = (group, _v2_home(parent))
        limit = "max" if quota_us < 0 else str(quota_us)
        _write(group / "cpu.max", f"{limit} {CFS_PERIOD_US}")

    def pids(self) -> list[int]:
        """Processes now in the group."""
        return _pids(self.paths[0]) if self._groups else []

    def _memory_file(self, v1_name: str, v2_name: str) -> str | None:
        if "memory" not in self._groups:
            return None
        group, _ = self._groups["memory"]
        return _read_optional(group / (v1_name if self._support_version() == 1 else v2_name))

    def _support_version(self) -> int | None:
        return self._support.version if self._support is not None else None

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this group (0 without memory accounting)."""
        if self._final is not None:
            return self._final[0]
        return _counter(self._memory_file("memory.oom_control", "memory.events"), "oom_kill")

    def peak_memory_bytes(self) -> int | None:
        """Highest memory use of the group, or None where the kernel does not record it."""
        if self._final is not None:
            return self._final[1]
        text = self._memory_file("memory.max_usage_in_bytes", "memory.peak")
        return int(text) if text is not None and text.strip() else None

    def remove(self) -> None:
        """Move remaining processes to the parent and remove the group(s); safe to repeat.

        ``oom_kills()`` and ``peak_memory_bytes()`` keep answering with the last values read.
        """
        if self._groups and self._final is None:
            self._final = (self.oom_kills(), self.peak_memory_bytes())
        for role, (group, home) in list(self._groups.items()):
            _destroy(group, home)
            del self._groups[role]
        self._created = False

    def __enter__(self) -> ClientCgroup:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"ClientCgroup({self.dirname!r}, memory_limit_bytes={self.memory_limit_bytes}, "
            f"cpu_quota_cores={self.cpu_quota_cores}, paths={[str(p) for p in self.paths]})"
        )
