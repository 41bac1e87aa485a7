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

import hashlib
import math
import re
from pathlib import Path
from types import TracebackType

from testbed.host.cgroup_files import (
    PREFIX,
    SUPERVISOR_LEAF,
    CgroupError,
    _counter,
    _destroy,
    _follow,
    _fresh_dir,
    _pids,
    _read_optional,
    _v2_enable,
    _v2_home,
    _write,
    _write_if_present,
)
from testbed.host.cgroup_hierarchy import CgroupSupport, detect

__all__ = [
    "CFS_PERIOD_US",
    "PREFIX",
    "SUPERVISOR_LEAF",
    "CgroupError",
    "CgroupSupport",
    "ClientCgroup",
    "detect",
    "sanitize_name",
]

CFS_PERIOD_US = 100_000  # CPU quota accounting period, microseconds
_MIN_QUOTA_US = 1_000  # the kernel's smallest CFS quota
_MAX_NAME_CHARS = 100


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
