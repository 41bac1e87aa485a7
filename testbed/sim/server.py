"""The server as a queued resource: client requests (split's backbone steps, KD's ingest) wait
their turn on one simpy Resource, and aggregation holds the clock for its measured time."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

import simpy

from testbed.protocol import ServerCall
from testbed.results.recorder import RunRecorder
from testbed.sim.devicetime import DeviceTime
from testbed.sim.ledger import Ledger, ServerEntry
from testbed.sim.resume import sigkill_if_asked
from testbed.sim.timeline import SERVER, RoundContext


class Server:
    def __init__(self, env: simpy.Environment, recorder: RunRecorder, device_time: DeviceTime, ledger: Ledger) -> None:
        self.env = env
        self.recorder = recorder
        self.device_time = device_time
        self.ledger = ledger
        self.resource = simpy.Resource(env, capacity=1)  # server compute: one request at a time

    def _work(self, rnd: int, cid: int, label: str, work: Callable[[], Any],
              cost_s: float | None = None) -> tuple[Any, float]:
        """(answer, host seconds) of server work: done for real and recorded in the ledger, or,
        while a resumed run replays it, as recorded. `cost_s`: the predicted host seconds of
        work that is not timed (emulation.compute: predicted)."""
        if self.ledger.answers:
            entry = self.ledger.replay_server(rnd, cid, label)
            return entry.value, entry.host_s
        sigkill_if_asked(rnd)
        t0 = time.perf_counter()
        value = work()
        if cost_s is None:  # host work that really ran
            host_s = time.perf_counter() - t0
            self.recorder.host_interval(rnd, "server", label, time.time(), host_s)
        else:
            host_s = cost_s
        self.ledger.record_server(ServerEntry(rnd, cid, label, host_s, value))
        return value, host_s

    def serve(self, ctx: RoundContext, cid: int, call: ServerCall) -> Generator:
        """Queue on the server; once served, run the real work and hold the server for it."""
        with self.resource.request() as turn:
            yield turn
            value, host_s = self._work(ctx.rnd, cid, call.label, lambda: call.fn(*call.args), call.cost_s)
            ctx.server_host_s += host_s
            host_s, device_s = self.device_time.server(ctx.rnd, cid, call.label, host_s)
            start = self.env.now
            yield self.env.timeout(device_s)
        self.recorder.event(round=ctx.rnd, client=cid, kind="server_compute", payload_bytes=0, wire_bytes=0,
                            sim_start_s=start, sim_end_s=self.env.now, host_s=host_s, device_s=device_s,
                            status="ok", detail=call.label)
        return value

    def step(self, rnd: int, work: Callable[[], dict], n_updates: int,
             cost_s: float | None = None) -> tuple[dict, float]:
        """Run an aggregation for real and hold the simulated clock for its measured time (or
        for `cost_s`, its predicted host seconds)."""
        metrics, host_s = self._work(rnd, SERVER, "aggregate", work, cost_s)
        host_s, device_s = self.device_time.aggregate(rnd, host_s)
        start = self.env.now
        self.env.run(until=self.env.timeout(device_s))
        self.recorder.event(round=rnd, client=SERVER, kind="aggregate", payload_bytes=0, wire_bytes=0,
                            sim_start_s=start, sim_end_s=self.env.now, host_s=host_s, device_s=device_s,
                            status="ok", detail=f"{n_updates} updates")
        return dict(metrics), device_s
