"""Client cgroups: parsing runs everywhere; limits are enforced only where detect() allows."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.host.cgroup_files import _v2_enable
from testbed.host.cgroup_hierarchy import _locate, _parse_mountinfo
from testbed.host.cgroups import (
    PREFIX,
    SUPERVISOR_LEAF,
    CgroupError,
    CgroupSupport,
    ClientCgroup,
    detect,
    sanitize_name,
)

MIB = 2**20

# /proc/self/mountinfo and /proc/self/cgroup as seen on three kinds of host.
V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = """\
9:name=systemd:/
4:memory:/process_api/abc
1:cpu,cpuacct:/
0::/
"""
V2_MOUNTINFO = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/user.slice/session-1.scope\n"
DOCKER_V1_MOUNTINFO = (
    "700 690 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
)
DOCKER_V1_CGROUP = "4:memory:/docker/abc\n"


def _child(code: str) -> subprocess.Popen[str]:
    """A Python child that waits for a line on stdin before running ``code``."""
    script = "import sys\nsys.stdin.readline()\n" + code
    return subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _name(what: str) -> str:
    return f"pytest-{os.getpid()}-{what}"  # unique across test runs sharing the host


def _needs(flag: str) -> CgroupSupport:
    support = detect()
    if os.geteuid() != 0 or not getattr(support, flag):
        pytest.skip(f"cgroups not usable here: {support.reason or 'not root'}")
    return support


# --- Parsing (runs everywhere) --------------------------------------------------------------


def test_locate_v1_uses_the_memory_cgroup_this_process_is_in() -> None:
    found = _locate(V1_MOUNTINFO, V1_CGROUP)

    assert found.version == 1
    assert found.memory_parent == Path("/sys/fs/cgroup/memory/process_api/abc")
    assert found.cpu_parent == Path("/sys/fs/cgroup/cpu,cpuacct")


def test_locate_v2_only_host() -> None:
    found = _locate(V2_MOUNTINFO, V2_CGROUP)

    assert found.version == 2
    here = Path("/sys/fs/cgroup/user.slice/session-1.scope")
    assert found.memory_parent == found.cpu_parent == here


def test_locate_strips_the_root_of_a_bind_mounted_subtree() -> None:
    found = _locate(DOCKER_V1_MOUNTINFO, DOCKER_V1_CGROUP)

    assert found.memory_parent == Path("/sys/fs/cgroup/memory")
    assert found.cpu_parent is None


def test_locate_without_cgroups_says_why() -> None:
    found = _locate("22 1 0:21 / /proc rw - proc proc rw\n", "")

    assert found.version is None
    assert "no cgroup" in found.reason


def test_mountinfo_unescapes_spaces_in_mount_points() -> None:
    (mount,) = _parse_mountinfo("1 2 0:3 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n")

    assert mount.mountpoint == Path("/mnt/my cg")


def test_names_are_sanitized() -> None:
    assert sanitize_name("client-3") == "client-3"
    assert re.fullmatch(r"client_3_.._x-[0-9a-f]{8}", sanitize_name("client 3/../x"))
    assert sanitize_name("..hidden").startswith("hidden-")
    assert sanitize_name("a/b") != sanitize_name("a_b")
    assert len(sanitize_name("a" * 500)) == 100 + 9
    group = ClientCgroup("c/1", memory_limit_bytes=None, cpu_quota_cores=None)
    assert group.dirname.startswith(PREFIX + "c_1-")
    with pytest.raises(ValueError, match='"name"'):
        sanitize_name("../")


def test_arguments_are_checked_without_touching_the_system() -> None:
    with pytest.raises(ValueError, match='"memory_limit_bytes"'):
        ClientCgroup("x", memory_limit_bytes=0, cpu_quota_cores=None)
    with pytest.raises(ValueError, match='"cpu_quota_cores"'):
        ClientCgroup("x", memory_limit_bytes=None, cpu_quota_cores=0.001)
    with pytest.raises(RuntimeError, match="create"):
        ClientCgroup("x", memory_limit_bytes=None, cpu_quota_cores=None).add(os.getpid())


def test_a_limit_without_cgroup_support_fails_with_the_reason() -> None:
    none = CgroupSupport(None, False, False, "no cgroup hierarchy mounted")
    group = ClientCgroup("x", memory_limit_bytes=MIB, cpu_quota_cores=None, support=none)

    with pytest.raises(CgroupError, match="no cgroup hierarchy mounted"):
        group.create()


def test_no_limits_without_support_is_a_no_op() -> None:
    none = CgroupSupport(None, False, False, "no cgroup hierarchy mounted")

    with ClientCgroup("x", memory_limit_bytes=None, cpu_quota_cores=None, support=none) as group:
        group.add(os.getpid())
        assert group.paths == ()
        assert group.oom_kills() == 0
        assert group.peak_memory_bytes() is None


# --- This host -----------------------------------------------------------------------------


def test_detect_matches_the_mounted_hierarchies() -> None:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    v1_memory = any(m[2] == "cgroup" and "memory" in m[3].split(",") for m in mounts)
    v2 = any(m[2] == "cgroup2" for m in mounts)

    support = detect()

    if v1_memory:
        assert support.version == 1
    elif v2:
        assert support.version == 2
    else:
        pytest.skip("no cgroup hierarchies mounted")
    parent = support.memory_parent
    if os.geteuid() != 0 or parent is None or not os.access(parent, os.W_OK):
        pytest.skip(f"cgroups not writable here: {support.reason}")
    if support.version == 1:  # the testbed hosts: v1, writable by root
        assert support.memory_writable and support.cpu_writable, support.reason


def test_memory_limit_kills_an_oversized_client() -> None:
    support = _needs("memory_writable")
    allocate = "b = bytearray(512 << 20)\nb[::4096] = b'\\x01' * len(b[::4096])\nprint('survived')"
    group = ClientCgroup(
        _name("oom"), memory_limit_bytes=256 * MIB, cpu_quota_cores=None, support=support
    )

    with group:
        child = _child(allocate)
        group.add(child.pid)
        out, _ = child.communicate("go\n", timeout=30)
        oom_kills, peak_bytes = group.oom_kills(), group.peak_memory_bytes()
        paths = group.paths

    assert child.returncode in (-9, 137), out
    assert oom_kills >= 1
    if peak_bytes is not None:
        assert 200 * MIB < peak_bytes <= 260 * MIB
    assert paths and not any(p.exists() for p in paths)
    assert group.oom_kills() == oom_kills  # last values survive remove()


LOOP_1S = """
import time
n = 0
cpu_start = time.process_time()
end = time.perf_counter() + 1.0
while time.perf_counter() < end:
    for _ in range(10_000):
        pass
    n += 1
print(n, time.process_time() - cpu_start)
"""


def test_cpu_quota_gives_a_quarter_core() -> None:
    support = _needs("cpu_writable")

    group = ClientCgroup(
        _name("cpu"), memory_limit_bytes=None, cpu_quota_cores=0.25, support=support
    )

    with group:
        free, throttled = _child(LOOP_1S), _child(LOOP_1S)
        group.add(throttled.pid)
        throttled.stdin.write("go\n")  # type: ignore[union-attr]
        throttled.stdin.flush()  # type: ignore[union-attr]
        free_loops, free_cpu_s = free.communicate("go\n", timeout=30)[0].split()
        throttled_loops, _ = throttled.communicate(timeout=30)[0].split()

    # Loops per second of a whole core, from the unthrottled run's own CPU time: other load on
    # the host slows that run's wall clock, not its loops per CPU second.
    core_loops_per_s = int(free_loops) / float(free_cpu_s)
    share_of_core = int(throttled_loops) / 1.0 / core_loops_per_s
    assert 0.15 <= share_of_core <= 0.40, (throttled_loops, free_loops, free_cpu_s)


def test_leftover_group_is_emptied_and_recreated() -> None:
    support = _needs("memory_writable")
    assert support.memory_parent is not None
    leftover = support.memory_parent / (PREFIX + _name("left"))
    leftover.mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    (leftover / "cgroup.procs").write_text(str(sleeper.pid))

    try:
        group = ClientCgroup(
            _name("left"), memory_limit_bytes=64 * MIB, cpu_quota_cores=None, support=support
        )
        with group:
            assert group.paths == (leftover,)
            assert group.pids() == []
            parent_pids = (support.memory_parent / "cgroup.procs").read_text().split()
            moved_home = str(sleeper.pid) in parent_pids
        group.remove()  # idempotent
    finally:
        sleeper.kill()
        sleeper.wait()

    assert moved_home
    assert not leftover.exists()


def test_remove_moves_live_processes_back_to_the_parent() -> None:
    support = _needs("memory_writable")
    sleeper = subprocess.Popen(["sleep", "30"])
    group = ClientCgroup(
        _name("rm"), memory_limit_bytes=64 * MIB, cpu_quota_cores=None, support=support
    )
    try:
        group.create()
        group.add(sleeper.pid)
        assert group.pids() == [sleeper.pid]
        (path,) = group.paths

        group.remove()

        assert not path.exists()
        assert sleeper.poll() is None  # still running, just not limited
    finally:
        group.remove()
        sleeper.kill()
        sleeper.wait()


def _writable_cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount = _parse_mountinfo(line)
        if mount and os.access(mount[0].mountpoint, os.W_OK):
            if mount[0].fstype == "cgroup2" and (mount[0].mountpoint / "cgroup.procs").exists():
                return mount[0].mountpoint
    return None


def test_v2_leaf_create_add_remove() -> None:
    """The v2 code path on whatever cgroup2 mount exists (here: the hybrid 'unified' one)."""
    mount = _writable_cgroup2_mount()
    own = Path("/proc/self/cgroup").read_text()
    if os.geteuid() != 0 or mount is None or "0::/\n" not in own:
        pytest.skip("needs root and this process in the root of a writable cgroup2 mount")
    bare = CgroupSupport(2, False, False, "controllers not tested", mount, mount)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        group = ClientCgroup(
            _name("v2"), memory_limit_bytes=None, cpu_quota_cores=None, support=bare
        )
        with group:
            group.add(sleeper.pid)
            assert group.pids() == [sleeper.pid]
            (path,) = group.paths
            assert group.oom_kills() == 0
    finally:
        sleeper.kill()
        sleeper.wait()

    assert not path.exists()


def test_v2_parent_with_processes_moves_them_to_a_supervisor_leaf() -> None:
    """v2's "no internal processes" rule, on whatever cgroup2 mount exists.

    Enabling a controller for the children of a non-root cgroup that holds processes fails
    (EBUSY); the processes must move into a leaf first. Uses a controller the mount's root
    already delegates (here, on the hybrid mount: hugetlb, enabled for the test and restored).
    """
    mount = _writable_cgroup2_mount()
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root and a writable cgroup2 mount")
    root_control = mount / "cgroup.subtree_control"
    enabled = root_control.read_text().split()
    available = (mount / "cgroup.controllers").read_text().split()
    usable = [c for c in ("pids", "memory", "hugetlb") if c in enabled + available]
    if not usable:
        pytest.skip(f"no pids/memory/hugetlb controller in {mount / 'cgroup.controllers'}")
    controller = usable[0]
    if controller not in enabled:
        root_control.write_text(f"+{controller}")
    parent = mount / (PREFIX + _name("v2parent"))
    parent.mkdir()
    resident, client = subprocess.Popen(["sleep", "30"]), subprocess.Popen(["sleep", "30"])
    try:
        (parent / "cgroup.procs").write_text(str(resident.pid))

        _v2_enable(parent, [controller])
        bare = CgroupSupport(2, False, False, "controllers not tested", parent, parent)
        with ClientCgroup("c", memory_limit_bytes=None, cpu_quota_cores=None, support=bare) as group:
            group.add(client.pid)
            in_group = group.pids()
        leaf_pids = (parent / SUPERVISOR_LEAF / "cgroup.procs").read_text().split()
        subtree = (parent / "cgroup.subtree_control").read_text().split()
    finally:
        for process in (resident, client):
            process.kill()
            process.wait()
        _rmdir_when_empty(parent / SUPERVISOR_LEAF)
        _rmdir_when_empty(parent)
        if controller not in enabled:
            with contextlib.suppress(OSError):  # another run may be using it
                root_control.write_text(f"-{controller}")

    assert controller in subtree
    assert in_group == [client.pid]
    assert sorted(leaf_pids) == sorted([str(resident.pid), str(client.pid)])  # evacuated there


def _rmdir_when_empty(group: Path) -> None:
    for _ in range(100):  # killed processes leave the group a moment later
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def test_cpu_quota_set_and_lifted_on_a_memory_only_group() -> None:
    support = _needs("cpu_writable")
    if not support.memory_writable:
        pytest.skip(f"memory cgroups not usable here: {support.reason}")
    group = ClientCgroup(
        _name("setcpu"), memory_limit_bytes=64 * MIB, cpu_quota_cores=None, support=support
    )
    # Two 1 s busy loops, each started by a line on stdin: quota 0.25, then no quota.
    busy = _child(LOOP_1S + "sys.stdout.flush()\nsys.stdin.readline()\n" + LOOP_1S)

    def one_second() -> tuple[int, float]:
        busy.stdin.write("go\n")  # type: ignore[union-attr]
        busy.stdin.flush()  # type: ignore[union-attr]
        loops, cpu_s = busy.stdout.readline().split()  # type: ignore[union-attr]
        return int(loops), float(cpu_s)

    try:
        with group:
            group.add(busy.pid)
            (memory_path,) = group.paths

            group.set_cpu_quota(0.25)
            paths = group.paths
            cpu_group = paths[-1]
            cpu_pids = (cpu_group / "cgroup.procs").read_text().split()
            in_group = group.pids()
            # Outweigh the host's other load, so that only the quota can hold the child back.
            (cpu_group / "cpu.shares").write_text("262144")
            quarter_loops, _ = one_second()
            throttled_quarter = _throttled_periods(cpu_group)

            group.set_cpu_quota(None)
            free_loops, free_cpu_s = one_second()
            throttled_free = _throttled_periods(cpu_group)
            busy.wait(timeout=10)
    finally:
        busy.kill()
        busy.wait()

    assert len(paths) == 2 and paths[0] == memory_path
    assert cpu_pids == [str(busy.pid)] and in_group == [busy.pid]  # moved, still in memory
    # Loops per second of a whole core, from the unthrottled second's own CPU time (as in
    # test_cpu_quota_gives_a_quarter_core); shares are loops per wall second against it.
    core_loops_per_s = free_loops / free_cpu_s
    quarter_share, free_share = quarter_loops / core_loops_per_s, free_loops / core_loops_per_s
    assert 0.15 <= quarter_share <= 0.40, (quarter_loops, free_loops, free_cpu_s)
    assert free_share > 0.7, (quarter_loops, free_loops, free_cpu_s)
    assert throttled_quarter > 0 and throttled_free == throttled_quarter
    assert not any(p.exists() for p in paths)
    assert group.paths == ()


def _throttled_periods(cpu_group: Path) -> int:
    stat = dict(line.split() for line in (cpu_group / "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])


def test_set_cpu_quota_checks_its_argument_and_needs_create() -> None:
    group = ClientCgroup("x", memory_limit_bytes=None, cpu_quota_cores=None)
    for bad in (0, -1.0, 0.001, float("nan"), float("inf")):
        with pytest.raises(ValueError, match='"cores"'):
            group.set_cpu_quota(bad)
    with pytest.raises(RuntimeError, match="create"):
        group.set_cpu_quota(0.5)


def test_set_cpu_quota_without_cgroup_support_fails_with_the_reason() -> None:
    none = CgroupSupport(None, False, False, "no cgroup hierarchy mounted")
    with ClientCgroup("x", memory_limit_bytes=None, cpu_quota_cores=None, support=none) as group:
        group.set_cpu_quota(None)  # nothing to remove: a no-op
        with pytest.raises(CgroupError, match="no cgroup hierarchy mounted"):
            group.set_cpu_quota(0.5)
