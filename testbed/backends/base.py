"""The backend contract: start one client per spec, run a round's fits, report outcomes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from testbed.calibration import HostCalibration
from testbed.protocol import Client, ClientSpec, FitIns, Outcome


class Backend(ABC):
    """Runs clients' real work; knows nothing of simulated time."""

    def __init__(self, client_class: type[Client], specs: list[ClientSpec]) -> None:
        self.client_class = client_class
        self.specs = {s.client_id: s for s in specs}

    @abstractmethod
    def start(self) -> None:
        """Create clients (load models) and calibrate the host as clients will use it."""

    @property
    @abstractmethod
    def calibration(self) -> HostCalibration:
        """Host speed measured at the threads and concurrency clients run with."""

    @abstractmethod
    def fit(self, tasks: dict[int, FitIns], *, kill: Iterable[int] = ()) -> dict[int, Outcome]:
        """Run the tasks; clients in `kill` are killed mid-fit (fault injection)."""

    def memory_limit_bytes(self, client_id: int) -> int | None:
        return None

    def set_cpu_quotas(self, quotas: dict[int, float]) -> dict[int, float]:
        """Throttle clients to CPU quotas (cores) where the backend can; returns those applied."""
        return {}

    def close(self) -> None:
        """Stop workers and release what start() made."""

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_backend(kind: str, client_class: type[Client], specs: list[ClientSpec], **options) -> Backend:
    if kind == "inproc":
        from testbed.backends.inproc import InprocBackend

        return InprocBackend(client_class, specs, **options)
    if kind == "process":
        from testbed.backends.process import ProcessBackend

        return ProcessBackend(client_class, specs, **options)
    raise ValueError(f"emulation.backend: unknown backend '{kind}'; supported: inproc, process")
