"""Hosts left clean: unique, owned cgroup names, and what dead runs left removed at the next start."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from testbed.backends import process
from testbed.backends.process import ProcessBackend
from testbed.config.scenario import load_scenario
from testbed.host.cgroup_files import SUPERVISOR_LEAF
from testbed.host.cgroups import ClientCgroup, detect
from testbed.host.cleanup import StaleReport, _cgroup_parents, remove_stale
from testbed.host.ownership import OWNER_FILE, claim, owned_name, owned_tempdir, owner_alive, recorded_owner
from testbed.protocol import Client, ClientSpec

SMOKE = Path(__file__).resolve().parents[3] / "scenarios" / "smoke.yaml"


class _IdleClient(Client):
    def setup(self) -> None:
        pass


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    assert not psutil.pid_exists(child.pid)
    return child.pid


@pytest.fixture()
def sleeper():
    """A live process other than this one: a concurrent run's."""
    child = subprocess.Popen(["sleep", "60"])
    yield child.pid
    child.kill()
    child.wait()


def _owned(parent: Path, pid: int, rest: str, kind: str = "") -> Path:
    folder = parent / f"testbed-{kind + '-' if kind else ''}pid{pid}-0123abcd-{rest}"
    folder.mkdir(parents=True)
    return folder


# --- names ------------------------------------------------------------------------------------


def test_two_backends_started_in_the_same_second_name_their_cgroups_apart(monkeypatch) -> None:
    monkeypatch.setattr(process, "worker_context", lambda client_class: None)  # no forkserver needed
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    scenario = load_scenario(SMOKE)
    specs = [ClientSpec(0, scenario, "unused", (0,), threads=1)]
    run_id = f"{scenario.name}-{int(time.time())}"  # as testbed.sim.startup names a run
    first, second = (ProcessBackend(_IdleClient, specs, run_id=run_id) for _ in range(2))
    try:
        names = [ClientCgroup(b.cgroup_name(0), memory_limit_bytes=None, cpu_quota_cores=None).dirname
                 for b in (first, second)]
    finally:
        first.close()
        second.close()
    assert names[0] != names[1]
    assert all(n.startswith("testbed-pid") and n.endswith(f"-{run_id}-client0") for n in names)
    assert [recorded_owner(Path(n)) for n in names] == [os.getpid()] * 2


def test_owned_names_and_claims_record_this_process(tmp_path) -> None:
    assert owned_name("dp") != owned_name("dp")
    assert recorded_owner(Path(owned_name("kd-ort") + "-x1y2")) == os.getpid()
    assert recorded_owner(Path(owned_name())) == os.getpid()
    assert recorded_owner(Path("testbed-supervisor")) is None
    assert recorded_owner(Path("testbed-quickstart-1700000000-client0")) is None  # named before owners
    folder = owned_tempdir("dp")
    try:
        assert folder.name.startswith(f"testbed-dp-pid{os.getpid()}-") and recorded_owner(folder) == os.getpid()
    finally:
        folder.rmdir()
    foreign = tmp_path / "pymp-abc"
    foreign.mkdir()
    assert recorded_owner(foreign) is None
    claim(foreign)
    assert recorded_owner(foreign) == os.getpid()


def test_the_forkserver_socket_folder_is_claimed(monkeypatch) -> None:
    from multiprocessing import forkserver, util

    from testbed.host.forkserver import worker_context

    monkeypatch.setattr(forkserver, "ensure_running", lambda: None)  # the claim, not the server
    worker_context()
    assert recorded_owner(Path(util.get_temp_dir())) == os.getpid()


# --- liveness ---------------------------------------------------------------------------------


def test_an_owner_is_alive_while_its_process_runs(sleeper) -> None:
    now = time.time()
    assert owner_alive(os.getpid(), now)
    assert owner_alive(sleeper, now)
    assert not owner_alive(_dead_pid(), now)
    started = psutil.Process(sleeper).create_time()
    assert not owner_alive(sleeper, started - 60)  # its id was reused: the folder is older than it
    assert owner_alive(sleeper, 0.0)  # a folder time from before boot tells nothing: kept


# --- removal (folders standing in for cgroups) -------------------------------------------------


def test_a_dead_runs_groups_and_folders_go_a_live_runs_stay(tmp_path, sleeper) -> None:
    dead, cgroups, temp = _dead_pid(), tmp_path / "cgroup", tmp_path / "tmp"
    stale_group = _owned(cgroups, dead, "smoke-1700000000-client0")
    stale_probe = _owned(cgroups, dead, "", kind="probe")
    live_groups = [_owned(cgroups, pid, "smoke-1700000000-client0") for pid in (os.getpid(), sleeper)]
    busy = _owned(cgroups, dead, "smoke-1700000000-client1")
    (busy / "cgroup.procs").write_text(f"{sleeper}\n")  # a dead run's worker still exiting
    kept_groups = [cgroups / SUPERVISOR_LEAF, cgroups / "testbed-smoke-1700000000-client0", cgroups / "other"]
    for group in kept_groups:
        group.mkdir()
    stale_dp = _owned(temp, dead, "x1y2", kind="dp")
    (stale_dp / "group-0").write_text("rendezvous")
    live_dp = _owned(temp, sleeper, "x1y2", kind="dp")
    stale_mp, unclaimed_mp, live_mp = temp / "pymp-dead", temp / "pymp-none", temp / "pymp-live"
    for folder in (stale_mp, unclaimed_mp, live_mp):
        folder.mkdir()
    (stale_mp / OWNER_FILE).write_text(f"{dead}\n")
    (live_mp / OWNER_FILE).write_text(f"{sleeper}\n")
    lines: list[str] = []

    report = remove_stale(lines.append, temp_root=temp, cgroup_parents=[cgroups])

    assert set(report.cgroups) == {stale_group, stale_probe}
    assert set(report.temp_folders) == {stale_dp, stale_mp}
    assert report.pids == (dead,)
    assert lines == [f"removed 2 stale cgroups and 2 temp folders of dead runs (pids {dead})"]
    for gone in (stale_group, stale_probe, stale_dp, stale_mp):
        assert not gone.exists()
    for kept in (*live_groups, busy, *kept_groups, live_dp, unclaimed_mp, live_mp):
        assert kept.exists(), kept
    assert remove_stale(lines.append, temp_root=temp, cgroup_parents=[cgroups]) == StaleReport()
    assert len(lines) == 1  # nothing removed: no line


def test_the_notice_counts_groups_once_and_lists_every_dead_pid() -> None:
    v1 = (Path("/sys/fs/cgroup/memory/testbed-pid7-0123abcd-a"), Path("/sys/fs/cgroup/cpu/testbed-pid7-0123abcd-a"))
    report = StaleReport(cgroups=(*v1, Path("/x/testbed-pid9-0123abcd-b")), temp_folders=(Path("/tmp/t"),),
                         pids=(7, 9))
    assert report.notice == "removed 2 stale cgroups and 1 temp folder of dead runs (pids 7, 9)"
    assert StaleReport().notice is None


# --- this host's cgroups ----------------------------------------------------------------------


def test_the_default_places_are_this_processs_cgroups() -> None:
    support = detect()
    parents = _cgroup_parents()
    for here in (support.memory_parent, support.cpu_parent):
        if here is not None:
            assert here in parents or (here.name == SUPERVISOR_LEAF and here.parent in parents)


def test_real_cgroups_of_a_dead_run_are_removed(tmp_path, sleeper) -> None:
    support = detect()
    if os.geteuid() != 0 or not support.memory_writable or support.memory_parent is None:
        pytest.skip(f"cgroups not usable here: {support.reason or 'not root'}")
    parent, dead = support.memory_parent, _dead_pid()
    stale = _owned(parent, dead, f"pytest-{os.getpid()}-stale")
    live = _owned(parent, sleeper, f"pytest-{os.getpid()}-live")
    busy = _owned(parent, dead, f"pytest-{os.getpid()}-busy")
    try:
        (busy / "cgroup.procs").write_text(str(sleeper))
        report = remove_stale(None, temp_root=tmp_path, cgroup_parents=[parent])
        assert report.cgroups == (stale,) and report.pids == (dead,)
        assert not stale.exists() and live.exists() and busy.exists()
    finally:
        (parent / "cgroup.procs").write_text(str(sleeper))  # back home, so its group can go
        for group in (stale, live, busy):
            if group.exists():
                group.rmdir()


def test_build_backend_removes_stale_leftovers_first(monkeypatch) -> None:
    from testbed.host import cleanup
    from testbed.sim import startup

    calls: list[object] = []
    monkeypatch.setattr(cleanup, "remove_stale", lambda progress: calls.append(progress))
    monkeypatch.setattr(startup, "make_backend", lambda *a, **k: calls.append("backend") or "backend")
    scenario = load_scenario(SMOKE)
    assert startup.build_backend(scenario, "per_client", _IdleClient, [], [], progress=print) == "backend"
    assert calls == [print, "backend"]
