"""One client's round on the clock: its framework script, interpreted action by action.

A `Send` crosses the network (its real payload size, timed by the link model), a
`ServerCall` queues on the server, and a client call runs on the backend for real; its
measured spans, converted to device time, then hold the client on the clock.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import simpy

from network import Network, TransferRecord
from testbed.backends import Backend
from testbed.config.fleet import Topology
from testbed.protocol import ClientCall, Failure, FitRes, Framework, Outcome, Send, ServerCall
from testbed.results.energy import Exchange
from testbed.results.recorder import RunRecorder
from testbed.sim.devicetime import DeviceTime
from testbed.sim.selection import Selection
from testbed.sim.server import Server
from testbed.sim.timeline import ClientTimeline, RoundContext


@dataclass
class ClientProcess:
    env: simpy.Environment
    net: Network
    topology: Topology
    selection: Selection
    framework: Framework
    backend: Backend
    recorder: RunRecorder
    device_time: DeviceTime
    server: Server

    def prefetch(self, ctx: RoundContext) -> None:
        """Start the calls whose inputs are known now, all clients at once on the host."""
        for cid, ins in ctx.ins.items():
            call = self.framework.prefetch(ctx.rnd, cid, ins)
            if call is not None:
                kill = cid in ctx.kill
                ctx.kill.discard(cid)
                ctx.prefetched[cid] = (call, self.backend.submit(cid, ctx.rnd, call.method, call.args, kill=kill))

    def round(self, ctx: RoundContext, cid: int) -> Generator:
        """The client's script on the clock, until it returns its result, fails or the round closes."""
        tl = ctx.timelines[cid] = ClientTimeline(start_s=self.env.now)  # a client runs once in a round's context
        tl.offline_at_s = self.selection.offline_at(cid)
        script = self.framework.client_script(ctx.rnd, cid, ctx.ins[cid])
        reply, calls = None, 0
        while not ctx.closed:  # after the round closed, a straggler stops at its next action
            try:
                action = script.send(reply)
            except StopIteration as stop:
                self._arrive(ctx, cid, stop.value, tl)
                return
            if isinstance(action, Send):  # the link's record once its last byte arrived (or it failed)
                up = action.direction == "up"
                path = self.topology.uplink_path(cid) if up else self.topology.downlink_path(cid)
                reply = yield self.net.transfer(action.payload.payload_bytes, path, label=action.payload.kind)
                self._sent(ctx.rnd, cid, action, reply, tl, up)
                if reply.status != "ok":
                    cause = "disconnected" if reply.status == "failed" else "timeout"
                    return self._fail(ctx, cid, script, tl, cause, f"{action.payload.kind}: link {reply.status}")
            elif isinstance(action, ServerCall):
                reply = yield from self.server.serve(ctx, cid, action)
            else:
                reply = self._call(ctx, cid, action)
                calls += 1
                tl.host = getattr(reply, "host", "") or tl.host
                tl.peak_rss_bytes = max(tl.peak_rss_bytes, getattr(reply, "peak_rss_bytes", 0) or
                                        self._oom_peak_bytes(cid, reply))
                finished = yield from self._compute(ctx.rnd, cid, reply, tl)
                if not finished:
                    return self._fail(ctx, cid, script, tl, "offline", "availability window ended mid-compute")
                if isinstance(reply, Failure):
                    return self._fail(ctx, cid, script, tl, reply.cause, reply.detail, reply)
                if cid in ctx.dropouts and calls == 1:
                    return self._fail(ctx, cid, script, tl, "dropout", "dropped out before sending its work")
        script.close()

    def _arrive(self, ctx: RoundContext, cid: int, result: FitRes, tl: ClientTimeline) -> None:
        ctx.results[cid] = result
        tl.arrived, tl.end_s = True, self.env.now
        if ctx.keep is not None and len(ctx.results) == ctx.keep and not ctx.enough.triggered:
            ctx.enough.succeed()

    def _fail(self, ctx: RoundContext, cid: int, script, tl: ClientTimeline, cause: str, detail: str,
              failure: Failure | None = None) -> None:
        script.close()
        ctx.failures[cid] = failure or Failure(cid, ctx.rnd, cause, detail, host_s=tl.host_s,
                                               peak_rss_bytes=tl.peak_rss_bytes)
        tl.end_s = self.env.now

    def _oom_peak_bytes(self, cid: int, reply: Outcome) -> int:
        """For an OOM kill the worker could not report: the peak memory of the client's cgroup
        (the process backend's), which the kill leaves at about the limit. 0 where unknown."""
        if not (isinstance(reply, Failure) and reply.cause == "oom"):
            return 0
        worker = getattr(self.backend, "workers", {}).get(cid)
        cgroup = getattr(worker, "cgroup", None)
        peak = cgroup.peak_memory_bytes() if cgroup is not None else None
        return peak or 0

    def _call(self, ctx: RoundContext, cid: int, call: ClientCall) -> Outcome:
        """The call's real result: from the prefetched future when it is that call."""
        pre = ctx.prefetched.pop(cid, None)
        if pre is not None and pre[0] == call:
            return pre[1].result()
        kill = cid in ctx.kill
        ctx.kill.discard(cid)
        return self.backend.submit(cid, ctx.rnd, call.method, call.args, kill=kill).result()

    def _sent(self, rnd: int, cid: int, action: Send, rec: TransferRecord, tl: ClientTimeline, up: bool) -> None:
        """A transfer's event row (EVENT_COLUMNS' order) and its bytes and span on the client's timeline."""
        self.recorder.event_values((rnd, cid, action.payload.kind, rec.payload_bytes, rec.wire_bytes, rec.start_s,
                                    rec.end_s, 0.0, 0.0, rec.status, ""))
        tl.exchanges.append(Exchange(action.direction, rec.wire_bytes, rec.start_s, rec.end_s, rec.status == "ok"))
        if up:
            tl.bytes_up += rec.payload_bytes
            tl.wire_up += rec.wire_bytes
        else:
            tl.bytes_down += rec.payload_bytes
            tl.wire_down += rec.wire_bytes

    def _compute(self, rnd: int, cid: int, outcome: Outcome, tl: ClientTimeline) -> Generator:
        """Put the outcome's spans on the clock; returns False when the client went offline
        before they ended."""
        spans = () if isinstance(outcome, Failure) else getattr(outcome, "spans", ())
        for span in spans:
            if span.t_end_unix:  # host work that really ran (a predicted span did not)
                self.recorder.host_interval(rnd, f"client-{cid}", span.label, span.t_end_unix, span.host_s)
            host_s, device_s, factor, bound = self.device_time.span(rnd, cid, span)
            start = self.env.now
            if start + device_s > tl.offline_at_s:  # the device leaves mid-compute: the work is lost
                tl.span_start_s, tl.span_host_s, tl.span_device_s = start, host_s, max(0.0, tl.offline_at_s - start)
                yield self.env.timeout(max(0.0, tl.offline_at_s - start))
                tl.span_start_s = None
                tl.host_s += host_s
                tl.device_s += self.env.now - start
                self._compute_event(rnd, cid, start, host_s, self.env.now - start, "failed", f"{span.label}: offline")
                return False
            tl.span_start_s, tl.span_host_s, tl.span_device_s = start, host_s, device_s  # what cut_at counts
            tl.factor, tl.bound = factor, bound
            yield self.env.timeout(device_s)
            tl.span_start_s = None
            tl.host_s += host_s
            tl.device_s += device_s
            self._compute_event(rnd, cid, start, host_s, device_s, "ok", span.label)
        if isinstance(outcome, Failure):
            device_s = self.device_time.failed(rnd, cid, outcome)
            start = self.env.now
            tl.span_start_s, tl.span_host_s, tl.span_device_s = start, outcome.host_s, device_s
            yield self.env.timeout(device_s)
            tl.span_start_s = None
            tl.host_s += outcome.host_s
            tl.device_s += device_s
            self._compute_event(rnd, cid, start, outcome.host_s, device_s, "failed",
                                f"{outcome.cause}: {outcome.detail}")
        return True

    def _compute_event(self, rnd: int, cid: int, start_s: float, host_s: float, device_s: float, status: str,
                       detail: str) -> None:
        self.recorder.event_values((rnd, cid, "compute", 0, 0, start_s, self.env.now, host_s, device_s, status,
                                    detail))  # EVENT_COLUMNS' order
