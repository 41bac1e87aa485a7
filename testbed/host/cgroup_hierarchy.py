"""Finding the cgroup hierarchies this process is in, and probing whether it may make groups there.

``detect()`` reads /proc/self/mountinfo and /proc/self/cgroup, picks cgroup v1 (separate
``memory`` and ``cpu`` hierarchies) or v2 (one unified hierarchy), and tries to make a child
group in each to learn whether limits can be set.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from testbed.host.cgroup_files import _read_optional, _rmdir_quietly
from testbed.host.ownership import owned_name


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
    probe = parent / owned_name("probe")  # a killed run's is removed at the next start (testbed.host.cleanup)
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
