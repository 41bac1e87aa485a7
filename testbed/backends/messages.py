"""What the runner's side and a client's worker say to each other, as typed values.

The process backend's workers get them over a pipe (pickled), the docker backend's over its
HTTP endpoint (safetensors, :mod:`testbed.backends.wire`): each class is registered as a wire
type under its own name (testbed.config.wiretypes), and the endpoint takes from a worker only
the classes of :data:`WORKER_POSTS`. Each reply's ``kind`` is the name it had when messages
were ``(kind, value)`` tuples; error texts still quote it.

Down, runner to worker: :class:`Call`, :class:`Calibrate`, :class:`AskLimits`, :class:`Stop`
(and, fetched once by a container's worker, :class:`WorkerSetup`). Up, worker to runner:
:class:`Ready` or :class:`SetupError` first, then :class:`Started` and :class:`Done` or
:class:`Raised` per call, :class:`Calibrated`, :class:`Limits`; and about a worker's end,
:class:`Died` (a container's supervisor) and :class:`Exited` (Docker, via the backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from testbed.config.wiretypes import wire_type

if TYPE_CHECKING:
    from testbed.protocol import ClientSpec

# --- down: what a worker is asked ------------------------------------------------------------


@wire_type("WorkerSetup")
@dataclass(frozen=True)
class WorkerSetup:
    """What a container's worker needs to build its client (``GET /clients/<cid>/spec``)."""

    client_class: str  # "module:qualname" of the Client class
    spec: ClientSpec
    threads: int  # torch's intra-op threads


@wire_type("Call")
@dataclass(frozen=True)
class Call:
    """Run ``method(*args)`` on client `client_id` of the worker."""

    client_id: int
    method: str
    args: tuple


@wire_type("Calibrate")
@dataclass(frozen=True)
class Calibrate:
    """Measure the host's speed for `seconds` (testbed.host.calibration)."""

    seconds: float


@wire_type("AskLimits")
@dataclass(frozen=True)
class AskLimits:
    """Read the container's limits as the kernel enforces them, now."""


@wire_type("Stop")
@dataclass(frozen=True)
class Stop:
    """Exit cleanly."""


# --- up: what a worker answers ---------------------------------------------------------------


@wire_type("Ready")
@dataclass(frozen=True)
class Ready:
    """The worker built its clients and waits for calls."""

    kind: ClassVar[str] = "ready"
    setup_s: float  # seconds its clients' set-up took
    rss_bytes: int  # its resident memory then
    pid: int | None = None  # a container's worker: its process id inside
    limits: dict[str, Any] | None = None  # a container's worker: the limits it read inside


@wire_type("SetupError")
@dataclass(frozen=True)
class SetupError:
    """Building a client raised; the worker exits."""

    kind: ClassVar[str] = "setup_error"
    traceback: str


@wire_type("Started")
@dataclass(frozen=True)
class Started:
    """The worker took the call and runs it now."""

    kind: ClassVar[str] = "started"
    pid: int
    rss_bytes: int | None = None  # its resident memory before the call (pipe workers)


@wire_type("Done")
@dataclass(frozen=True)
class Done:
    """The call's return value (its `peak_rss_bytes` filled in where it has one)."""

    kind: ClassVar[str] = "ok"
    result: Any


@wire_type("Raised")
@dataclass(frozen=True)
class Raised:
    """The call raised; the worker lives on."""

    kind: ClassVar[str] = "error"
    detail: str  # the exception, as traceback.format_exception_only puts it
    host_s: float  # seconds the call ran before it raised
    peak_rss_bytes: int


@wire_type("Calibrated")
@dataclass(frozen=True)
class Calibrated:
    """A calibration's result, as HostCalibration.to_dict() gives it."""

    kind: ClassVar[str] = "calibration"
    values: dict[str, Any]


@wire_type("Limits")
@dataclass(frozen=True)
class Limits:
    """The limits a container's worker read inside (testbed.backends.http_worker.read_limits)."""

    kind: ClassVar[str] = "limits"
    values: dict[str, Any]


@wire_type("Died")
@dataclass(frozen=True)
class Died:
    """A container's supervisor saw its worker die; read from the container's own cgroup."""

    kind: ClassVar[str] = "died"
    returncode: int | None  # the worker's (negative: killed by that signal)
    peak_memory_bytes: int | None = None
    oom_kills: int | None = None


@wire_type("Exited")
@dataclass(frozen=True)
class Exited:
    """Docker saw the container exit (the backend's own note, never sent by a worker)."""

    kind: ClassVar[str] = "exited"
    exit_code: int | None
    oom_killed: bool = False
    error: str = ""


Reply = Ready | SetupError | Started | Done | Raised | Calibrated | Limits | Died | Exited

MESSAGE_TYPES: tuple[type, ...] = (WorkerSetup, Call, Calibrate, AskLimits, Stop, Ready, SetupError, Started,
                                   Done, Raised, Calibrated, Limits, Died, Exited)
# what a container's worker or supervisor may post to the endpoint (Exited is the backend's own note)
WORKER_POSTS: tuple[type, ...] = (Ready, SetupError, Started, Done, Raised, Calibrated, Limits, Died)
