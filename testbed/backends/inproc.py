"""Every client in this process, one after another: for fast tests and debugging."""

from __future__ import annotations

import time
import traceback
from concurrent.futures import Future

import torch

from testbed.backends.base import Backend, with_peak_rss
from testbed.host.calibration import HostCalibration, calibrate_host
from testbed.ml.memory import PeakRssSampler
from testbed.protocol import Client, ClientSpec, Failure, Outcome


class InprocBackend(Backend):
    def __init__(self, client_class: type[Client], specs: list[ClientSpec], *, threads: int = 1,
                 calibration_s: float = 0.5, **_: object) -> None:
        super().__init__(client_class, specs)
        self.threads = threads
        self.calibration_s = calibration_s
        self.clients: dict[int, Client] = {}
        self._calibration: HostCalibration | None = None

    def start(self) -> None:
        torch.set_num_threads(self.threads)
        self._calibration = calibrate_host(threads=self.threads, seconds=self.calibration_s)
        for cid, spec in self.specs.items():
            client = self.client_class(spec)
            client.setup()
            self.clients[cid] = client

    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        """Runs the call at once, in this process; the returned future is already done."""
        future: Future = Future()
        future.set_result(self._call(cid, rnd, method, args, kill))
        return future

    def _call(self, cid: int, rnd: int, method: str, args: tuple, kill: bool) -> Outcome:
        if kill:
            return Failure(cid, rnd, "killed", "fault injection: killed before the call ran")
        t0 = time.perf_counter()
        try:
            with PeakRssSampler() as mem:
                res = getattr(self.clients[cid], method)(*args)
        except Exception as exc:  # a client's crash is a recorded failure, not the run's end
            detail = "".join(traceback.format_exception_only(exc)).strip()
            return Failure(cid, rnd, "error", detail, host_s=time.perf_counter() - t0)
        return with_peak_rss(res, mem.peak_rss_bytes)
