"""The backend contract: start one client per spec, run a round's fits, report outcomes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import fields, replace
from typing import Any

from testbed.host.calibration import HostCalibration
from testbed.protocol import Client, ClientSpec, FitIns, Outcome


def with_peak_rss(result: Any, peak_rss_bytes: int) -> Any:
    """The result with its `peak_rss_bytes` field filled in, where it has one."""
    names = {f.name for f in fields(result)} if hasattr(result, "__dataclass_fields__") else set()
    return replace(result, peak_rss_bytes=peak_rss_bytes) if "peak_rss_bytes" in names else result


class Backend(ABC):
    """Runs clients' real work; knows nothing of simulated time."""

    def __init__(self, client_class: type[Client], specs: list[ClientSpec]) -> None:
        self.client_class = client_class
        self.specs = {s.client_id: s for s in specs}

    def launch(self) -> None:
        """Optional first half of start(): create the clients (load their models). It may run
        beside the server's own set-up; start() then calibrates on a quiet host."""

    @abstractmethod
    def start(self) -> None:
        """Create clients (load models) where launch() has not, and calibrate the host as
        clients will use it."""

    @property
    def calibration(self) -> HostCalibration:
        """Host speed measured at the threads and concurrency clients run with (set by start())."""
        if getattr(self, "_calibration", None) is None:
            raise RuntimeError("backend not started")
        return self._calibration

    @abstractmethod
    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        """Start `method(*args)` in client `cid`; the future's value is its result or a Failure.
        `kill` kills the client's worker once the call has started (fault injection)."""

    def fit(self, tasks: dict[int, FitIns], *, kill: Iterable[int] = ()) -> dict[int, Outcome]:
        """Run every client's fit (in parallel where the backend can)."""
        killed = set(kill)
        futures = {cid: self.submit(cid, ins.round, "fit", (ins,), kill=cid in killed) for cid, ins in tasks.items()}
        return {cid: f.result() for cid, f in sorted(futures.items())}

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
