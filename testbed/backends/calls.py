"""The call state machine of the backends whose clients live in workers they message.

The process backend (a worker is an OS process, messages cross a pipe) and the docker
backend (a worker runs in a container, messages cross an HTTP endpoint) run a client's call
the same way; :class:`WorkerBackend` writes it once:

1. ``submit`` queues the call; it runs when a core slot is free, and its outcome is the
   value of the returned Future.
2. A worker that is not alive is restarted first: the dead one discarded, a new one
   spawned, its first message awaited (:class:`Ready`, or :class:`SetupError`). A worker
   whose set-up failed makes the call a ``Failure`` ("client setup failed: ...").
3. The worker is pinned to the slot's cores and sent the :class:`Call`; in flight, it
   answers :class:`Started` (where fault injection asks, the worker is killed then: a
   ``killed`` Failure), then :class:`Done` (the result) or :class:`Raised` (an ``error``
   Failure). Silence past the timeout or the worker's death is a Failure whose cause
   (``oom``, ``killed``, ``timeout``, ``crashed``) and detail the transport tells.

What differs is the transport, supplied by each subclass: how a message is sent and
received, when a worker counts as alive, how one is spawned, pinned, killed, waited for
and discarded, and how its death is explained.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from testbed.backends.base import Backend
from testbed.backends.messages import Calibrate, Calibrated, Call, Done, Raised, Ready, Reply, SetupError, Started
from testbed.backends.slots import CoreSlots
from testbed.host.calibration import HostCalibration, calibrate_host
from testbed.protocol import ClientSpec, Failure, Outcome


class Worker(Protocol):
    """What the machine reads of a transport's worker record."""

    spec: ClientSpec
    setup_error: str | None


W = TypeVar("W", bound=Worker)


@dataclass(frozen=True)
class Request:
    """One submitted call: `method(*args)` on client `client_id` in round `round`."""

    client_id: int
    round: int
    method: str
    args: tuple
    kill: bool  # fault injection: kill the worker once the call has started


class WorkerBackend(Backend, Generic[W]):
    """A backend whose clients live in workers; subclasses supply the transport."""

    workers: dict[int, W]
    slots: CoreSlots
    timeout_s: float
    setup_timeout_s: float
    calibration_s: float

    # -- the machine -------------------------------------------------------------------------
    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        """Queue the call; it runs when a core slot is free, pinned to that slot's cores."""
        return self._schedule(Request(cid, rnd, method, args, kill))

    def _schedule(self, request: Request) -> Future:
        """Run the request in the next free core slot."""
        return self.slots.submit(lambda cores: self._run(request, cores))

    def _run(self, request: Request, cores: list[int]) -> Outcome:
        """The request on its client's worker, restarted first where it is dead."""
        w = self.workers[request.client_id]
        if not self._alive(w):
            self._respawn(w)
        if w.setup_error is not None:
            return self._failure(w, request, self._cause(w, 0), f"client setup failed: {w.setup_error}")
        self._pin(w, cores)
        mark = self._oom_mark(w)
        t0 = time.perf_counter()
        self._send(w, Call(request.client_id, request.method, request.args))
        return self._in_flight(w, request, mark, t0)

    def _in_flight(self, w: W, request: Request, mark: int, t0: float) -> Outcome:
        """The sent call's replies, up to its result or its failure."""
        while True:
            reply = self._receive(w, self.timeout_s)
            if reply is None:
                return self._failure(w, request, self._cause(w, mark), self._death_detail(w),
                                     host_s=time.perf_counter() - t0)
            if isinstance(reply, Started):
                if request.kill:
                    return self._kill_mid_call(w, request, t0)
                continue
            if isinstance(reply, Done):
                return reply.result
            if isinstance(reply, Raised):
                return Failure(request.client_id, request.round, "error", reply.detail, host_s=reply.host_s,
                               peak_rss_bytes=reply.peak_rss_bytes)

    def _failure(self, w: W, request: Request, cause: str, detail: str, *, host_s: float = 0.0) -> Failure:
        """The request failed with the worker gone (or never set up)."""
        return Failure(request.client_id, request.round, cause, detail, host_s=host_s,
                       peak_rss_bytes=self._failure_peak(w))

    def _kill_mid_call(self, w: W, request: Request, t0: float) -> Failure:
        """Fault injection: kill the worker once it has started the call; whatever it was
        about to send is lost with it."""
        self._kill(w)
        self._await_exit(w)
        detail = f"fault injection: {self._death_detail(w)} mid-fit"
        return Failure(request.client_id, request.round, "killed", detail, host_s=time.perf_counter() - t0)

    def _respawn(self, w: W) -> None:
        """A fresh worker in place of a dead one."""
        self._discard(w)
        self._spawn(w)
        self._wait_ready(w)

    def _wait_ready(self, w: W) -> None:
        """The worker's first message: it is ready, or `setup_error` says why not."""
        reply = self._receive(w, self.setup_timeout_s)
        if reply is None:
            w.setup_error = self._death_detail(w)
        elif isinstance(reply, SetupError):
            w.setup_error = reply.traceback
            self._await_exit(w)
        elif isinstance(reply, Ready):
            self._on_ready(w, reply)
        else:
            w.setup_error = f"unexpected first message {reply.kind!r}"

    def _calibrate_in(self, workers: list[W], timeout_s: float, *, threads: int,
                      combine: Callable[[list[HostCalibration]], HostCalibration],
                      needed: int = 1) -> HostCalibration:
        """The host's speed as `workers` measure it at once, combined; with fewer than `needed`
        answers, measured in the runner's own process at `threads` threads instead."""
        results = self._calibrations(workers, timeout_s)
        if len(results) < needed:
            return calibrate_host(threads=threads, seconds=self.calibration_s)
        return combine(results)

    def _calibrations(self, workers: list[W], timeout_s: float) -> list[HostCalibration]:
        """Calibrate in `workers` at once, each pinned to a core slot of its own; the
        calibrations that came back."""
        for w, cores in zip(workers, self.slots.cores, strict=False):
            self._pin(w, cores)
            self._send(w, Calibrate(self.calibration_s))
        replies = [self._receive(w, timeout_s) for w in workers]
        return [HostCalibration.from_dict(r.values) for r in replies if isinstance(r, Calibrated)]

    # -- what a transport may refine ---------------------------------------------------------
    def _on_ready(self, w: W, ready: Ready) -> None:
        """The worker reported ready (a transport may record it)."""

    def _oom_mark(self, w: W) -> int:
        """A mark taken before the call, handed to `_cause` (OOM kills counted so far)."""
        return 0

    def _failure_peak(self, w: W) -> int:
        """The peak memory a dead worker's Failure reports, where the transport knows it."""
        return 0

    # -- the transport -----------------------------------------------------------------------
    @abstractmethod
    def _send(self, w: W, message: Any) -> None:
        """Send the worker a message."""

    @abstractmethod
    def _receive(self, w: W, timeout_s: float) -> Reply | None:
        """The worker's next message; None once it died or stayed silent for timeout_s
        (then it is killed)."""

    @abstractmethod
    def _alive(self, w: W) -> bool:
        """Whether the worker can take a call."""

    @abstractmethod
    def _spawn(self, w: W) -> None:
        """Start a fresh worker for the record."""

    @abstractmethod
    def _discard(self, w: W) -> None:
        """Let go of a dead worker before its successor is spawned."""

    @abstractmethod
    def _kill(self, w: W) -> None:
        """Kill the worker where it runs."""

    @abstractmethod
    def _await_exit(self, w: W) -> None:
        """Wait until a dying worker is gone."""

    @abstractmethod
    def _pin(self, w: W, cores: list[int]) -> None:
        """Let the worker compute on `cores` only."""

    @abstractmethod
    def _cause(self, w: W, mark: int) -> str:
        """Why the worker is gone: oom | killed | timeout | crashed."""

    @abstractmethod
    def _death_detail(self, w: W) -> str:
        """How the worker ended, in words."""
