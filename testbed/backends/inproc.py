"""Every client in this process, one after another: for fast tests and debugging."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable

import torch

from testbed.backends.base import Backend
from testbed.backends.memory import PeakRssSampler
from testbed.calibration import HostCalibration, calibrate_host
from testbed.protocol import Client, ClientSpec, Failure, FitIns, Outcome


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

    @property
    def calibration(self) -> HostCalibration:
        if self._calibration is None:
            raise RuntimeError("backend not started")
        return self._calibration

    def fit(self, tasks: dict[int, FitIns], *, kill: Iterable[int] = ()) -> dict[int, Outcome]:
        killed = set(kill)
        out: dict[int, Outcome] = {}
        for cid in sorted(tasks):
            if cid in killed:
                out[cid] = Failure(cid, tasks[cid].round, "killed", "fault injection: killed before its fit")
                continue
            out[cid] = self._fit_one(cid, tasks[cid])
        return out

    def _fit_one(self, cid: int, ins: FitIns) -> Outcome:
        t0 = time.perf_counter()
        try:
            with PeakRssSampler() as mem:
                res = self.clients[cid].fit(ins)
        except Exception as exc:  # a client's crash is a recorded failure, not the run's end
            detail = "".join(traceback.format_exception_only(exc)).strip()
            return Failure(cid, ins.round, "error", detail, host_s=time.perf_counter() - t0)
        from dataclasses import replace

        return replace(res, peak_rss_bytes=mem.peak_rss_bytes)
