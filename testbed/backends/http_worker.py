"""The client side of the Docker backend: what runs inside each client container.

``python -m testbed.backends.http_worker`` is the container's main process, a small
supervisor (no torch): it starts the worker as a child process and waits for it. The worker
fetches its spec from the server's endpoint, builds its Client once (as the process
backend's worker does), registers as ready, then long-polls for commands and posts back
results, every body safetensors (testbed.backends.wire) and every message one of
testbed.backends.messages. When the worker dies (the memory limit's OOM killer picks it: it
holds the model), the supervisor reads the container's own cgroup (peak memory, OOM kills)
and posts that as a Died message before it exits with the worker's status (137 after a
SIGKILL). With ``TESTBED_RESPAWN=1`` (clients started by ``docker compose``, not by the
backend) it starts a fresh worker instead of exiting.

Environment: TESTBED_ENDPOINT (http://127.0.0.1:PORT), TESTBED_TOKEN, TESTBED_CLIENT_ID,
TESTBED_INCARNATION (optional), TESTBED_RESPAWN (optional), TESTBED_CONNECT_RETRY_S (how long an
unreachable endpoint is retried before the worker gives up; default 15).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.backends.messages import (
    AskLimits,
    Calibrate,
    Calibrated,
    Call,
    Died,
    Done,
    Limits,
    Raised,
    Ready,
    SetupError,
    Started,
    Stop,
    WorkerSetup,
)
from testbed.backends.wire import decode, encode

if TYPE_CHECKING:
    from testbed.protocol import Client

EXIT_SERVER_GONE = 3  # the endpoint stopped answering: the run is over
EXIT_REPLACED = 4  # the server started a newer container for this client
_CONNECT_RETRY_S = 15.0


class ServerGone(Exception):
    pass


class Replaced(Exception):
    pass


class Link:
    """Requests to the endpoint, with the bearer token and this incarnation."""

    def __init__(self, url: str, token: str, client_id: int, incarnation: str | None) -> None:
        self.base = f"{url.rstrip('/')}/clients/{client_id}"
        self.token = token
        self.query = f"inc={incarnation}" if incarnation else ""

    def _request(self, method: str, route: str, body: bytes | None = None, *, query: str = "",
                 timeout_s: float = 60.0) -> tuple[int, bytes]:
        q = "&".join(x for x in (self.query, query) if x)
        req = urllib.request.Request(f"{self.base}/{route}{'?' + q if q else ''}", data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/octet-stream"})
        deadline = time.monotonic() + float(os.environ.get("TESTBED_CONNECT_RETRY_S") or _CONNECT_RETRY_S)
        while True:
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                if exc.code == 409:
                    raise Replaced() from None
                if exc.code != 503:  # 503: the endpoint had no free connection slot; retried below
                    raise
                if time.monotonic() > deadline:
                    raise ServerGone(f"the endpoint stayed busy: {exc}") from None
                time.sleep(0.5)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ServerGone(str(exc)) from None
                time.sleep(0.5)

    def spec(self) -> WorkerSetup:
        return decode(self._request("GET", "spec")[1])

    def post(self, route: str, message: Any) -> None:
        self._request("POST", route, encode(message))

    def next(self, wait_s: float = 20.0) -> Any | None:
        status, body = self._request("GET", "next", query=f"wait_s={wait_s}", timeout_s=wait_s + 30)
        return decode(body) if status == 200 else None


def link_from_env() -> Link:
    return Link(os.environ["TESTBED_ENDPOINT"], os.environ["TESTBED_TOKEN"], int(os.environ["TESTBED_CLIENT_ID"]),
                os.environ.get("TESTBED_INCARNATION") or None)


# --- what the container's limits are, read from inside ---------------------------------------

_CG = Path("/sys/fs/cgroup")


def _read(*candidates: str) -> str | None:
    for name in candidates:
        try:
            return (_CG / name).read_text().strip()
        except OSError:
            continue
    return None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.lstrip("-").isdigit() else None


def read_limits() -> dict[str, Any]:
    """This container's memory limit, CPU quota and CPU set as the kernel enforces them
    (cgroup v2 files first, then v1's); None where there is no limit."""
    v2 = (_CG / "cgroup.controllers").is_file()
    if v2:
        mem = _read("memory.max")
        quota_text, _, period_text = (_read("cpu.max") or "max 100000").partition(" ")
    else:
        mem = _read("memory/memory.limit_in_bytes")
        quota_text = _read("cpu/cpu.cfs_quota_us", "cpu,cpuacct/cpu.cfs_quota_us") or "-1"
        period_text = _read("cpu/cpu.cfs_period_us", "cpu,cpuacct/cpu.cfs_period_us") or "100000"
    memory_limit = _int_or_none(mem)
    if memory_limit is not None and memory_limit >= 2**62:  # v1's "no limit" is a huge number
        memory_limit = None
    quota, period = _int_or_none(quota_text), _int_or_none(period_text)
    return {
        "cgroup_version": 2 if v2 else 1,
        "memory_limit_bytes": memory_limit,
        "cpu_quota_us": quota if quota is not None and quota > 0 else None,
        "cpu_period_us": period,
        "cpu_quota_cores": quota / period if quota and quota > 0 and period else None,
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def memory_facts() -> dict[str, int | None]:
    """The container's peak memory (bytes) and OOM-kill count so far, from its cgroup."""
    if (_CG / "cgroup.controllers").is_file():
        peak, events = _read("memory.peak"), _read("memory.events") or ""
    else:
        peak, events = _read("memory/memory.max_usage_in_bytes"), _read("memory/memory.oom_control") or ""
    counters = dict(line.split(" ", 1) for line in events.splitlines() if " " in line)
    return {"peak_memory_bytes": _int_or_none(peak), "oom_kills": _int_or_none(counters.get("oom_kill"))}


# --- the worker (child process) ----------------------------------------------------------------


# what a worker imports before it asks for its spec (the supervisor never does: no torch there)
_CALL_MODULES = ("psutil", "testbed.backends.base", "testbed.host.calibration", "testbed.ml.memory")


def _load_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def serve(link: Link) -> int:
    """Build the client, then serve commands until told to stop."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    for module in _CALL_MODULES:
        import_module(module)
    setup = link.spec()
    torch.set_num_threads(setup.threads)
    try:
        client = _build_client(link, setup)
    except Exception:
        link.post("ready", SetupError(traceback.format_exc(limit=4)))
        return 1
    while True:
        command = link.next()
        if command is None:
            continue
        if isinstance(command, Stop):
            return 0
        if isinstance(command, Calibrate):
            from testbed.host.calibration import calibrate_host

            link.post("result", Calibrated(calibrate_host(threads=setup.threads, seconds=command.seconds).to_dict()))
        elif isinstance(command, AskLimits):
            link.post("result", Limits(_limits_inside()))
        elif isinstance(command, Call):
            link.post("result", Started(os.getpid()))
            link.post("result", _answer(client, command))


def _build_client(link: Link, setup: WorkerSetup) -> Client:
    """The client, set up; Ready (with the limits read inside) is posted once it is."""
    import psutil

    t0 = time.perf_counter()
    client = _load_class(setup.client_class)(setup.spec)
    client.setup()
    limits = _limits_inside()
    link.post("ready", Ready(setup_s=time.perf_counter() - t0, rss_bytes=psutil.Process().memory_info().rss,
                             pid=os.getpid(), limits=limits))
    return client


def _limits_inside() -> dict[str, Any]:
    """The container's limits as read inside, and torch's thread count."""
    import torch

    return {**read_limits(), "torch_threads": torch.get_num_threads()}


def _answer(client: Client, call: Call) -> Done | Raised:
    """Run the call: its result with the peak memory, or what it raised."""
    from testbed.backends.base import with_peak_rss
    from testbed.ml.memory import PeakRssSampler

    t0 = time.perf_counter()
    try:
        with PeakRssSampler() as mem:
            res = getattr(client, call.method)(*call.args)
        return Done(with_peak_rss(res, mem.peak_rss_bytes))
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return Raised(detail, time.perf_counter() - t0, mem.peak_rss_bytes)


def child_main() -> int:
    link = link_from_env()
    try:
        return serve(link)
    except ServerGone:
        return EXIT_SERVER_GONE
    except Replaced:
        return EXIT_REPLACED


# --- the supervisor (the container's main process) -----------------------------------------------


def supervise() -> int:
    link = link_from_env()
    respawn = os.environ.get("TESTBED_RESPAWN") == "1"
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        child = subprocess.Popen([sys.executable, "-m", "testbed.backends.http_worker", "--child"])
        rc = child.wait()
        if rc in (0, EXIT_SERVER_GONE, EXIT_REPLACED):
            return 0 if rc == EXIT_REPLACED else rc
        try:
            link.post("result", Died(rc, **memory_facts()))
        except (ServerGone, Replaced, urllib.error.HTTPError):
            return EXIT_SERVER_GONE
        if not respawn:
            return 128 - rc if rc < 0 else rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return child_main() if argv[:1] == ["--child"] else supervise()


if __name__ == "__main__":
    sys.exit(main())
