"""FedBuff (`policy.kind: fedbuff`): asynchronous buffered aggregation on the same clock.

`concurrency` clients work at once, each from the global version current when it starts;
every `buffer_size` arrivals the server makes the next version (one rounds.csv row), until
`framework.rounds` versions exist. A finished client is replaced at once (after the server
step its arrival triggered, so the newcomer gets the new version).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from testbed.protocol import FitIns, FitRes
from testbed.results.recorder import FAILED_OUTCOMES, failure_outcome
from testbed.sim.policy import OnRound, RoundPolicy
from testbed.sim.recording import traffic
from testbed.sim.resume import OpenWork
from testbed.sim.timeline import ClientTimeline, RoundContext


@dataclass(eq=False)
class AsyncTask:
    """One client's work from the global version it started from to its arrival or failure.
    Its events carry round start_version + 1."""

    cid: int
    start_version: int
    ctx: RoundContext  # the client's own context: its FitIns, timeline, result or failure
    ins_index: int = 0  # its configure_fit call in the ledger
    proc: Any = None  # its simpy process
    arrival_version: int | None = None  # the server version when its update arrived
    outcome: str = ""  # ok | failed | discarded, once accounted in a round

    @property
    def ins(self) -> FitIns:
        return self.ctx.ins[self.cid]

    @property
    def result(self) -> FitRes:
        return self.ctx.results[self.cid]

    @property
    def timeline(self) -> ClientTimeline:
        return self.ctx.timelines[self.cid]

    @property
    def staleness(self) -> int | None:
        """Server versions made while it trained (None until its update arrived)."""
        return None if self.arrival_version is None else self.arrival_version - self.start_version


@dataclass
class ServerRound:
    """What the server version in progress (one rounds.csv row) has accounted so far."""

    rnd: int
    sim_start_s: float
    host_t0: float  # perf_counter() when it began
    buffer: list[AsyncTask] = field(default_factory=list)  # arrived updates, in arrival order
    accounted: list[AsyncTask] = field(default_factory=list)  # every task recorded in it
    started: list[int] = field(default_factory=list)  # clients that started work during it
    host_fit_s: float = 0.0  # host seconds spent running the clients' simulation


class FedBuffRounds(RoundPolicy):
    kind = "fedbuff"
    group_may_evaluate = False  # client work may be queued on the group between versions

    def run(self, on_round: OnRound | None) -> None:
        p = self.parts
        fw, policy = p.scenario.framework, p.scenario.policy
        buffer_size = policy.buffer_size or fw.clients_per_round
        concurrency = policy.concurrency or fw.clients_per_round
        self.round = ServerRound(1, p.env.now, time.perf_counter())
        self.kills = {(k.round, k.client) for k in p.scenario.faults.kill}  # not yet applied
        self.version = 0
        self.active: dict[int, AsyncTask] = {}
        self.n_tasks = 0  # tasks started so far (seeds selection, batches and dropouts)
        self.failed_at_s: dict[int, float] = {}  # client -> when it last failed
        while self.version < fw.rounds:
            self._fill_slots(concurrency)
            t0 = time.perf_counter()
            p.env.run(until=p.env.any_of([task.proc for task in self.active.values()]))
            self.round.host_fit_s += time.perf_counter() - t0
            finished = sorted((t for t in self.active.values() if not t.proc.is_alive),
                              key=lambda t: (t.timeline.end_s, t.cid))
            version_before = self.version
            for task in finished:
                if self.version == fw.rounds:
                    break
                del self.active[task.cid]
                self._settle(task)
                if len(self.round.buffer) == buffer_size:
                    self._server_version()
                    if on_round:
                        on_round(p.recorder.rounds[-1])
            if self.version > version_before:
                p.checkpoints.after_round(self.version, self._open_work())

    def _open_work(self) -> OpenWork:
        """The tasks at work now, (configure_fit call index, client, FitIns, submit round) each,
        once their prefetched calls have answered (a checkpoint keeps those answers whole)."""
        if not self.parts.ledger.replaying:
            for task in self.active.values():
                pre = task.ctx.prefetched.get(task.cid)
                if pre is not None:
                    pre[1].result()
        return [(t.ins_index, t.cid, t.ins, t.ctx.rnd) for t in self.active.values()]

    def _fill_slots(self, concurrency: int) -> None:
        """Start clients until `concurrency` are at work: a seeded choice among the idle online ones."""
        free = concurrency - len(self.active)
        idle = self._idle_online() if free > 0 else []
        if not idle:
            return
        rng = np.random.default_rng([self.parts.scenario.seed, self.n_tasks, 0xFB])
        for cid in sorted(int(c) for c in rng.choice(np.array(idle), size=min(free, len(idle)), replace=False)):
            self.active[cid] = self._start_task(cid)

    def _idle_online(self) -> list[int]:
        """Online clients not at work, except those that failed at this very instant (reselecting
        them could loop forever without the clock moving). With nobody at work, the clock first
        advances to the next time someone is online."""
        selection = self.parts.selection
        online = selection.online() if self.active else selection.online_now()
        now_s = self.parts.env.now
        idle = [cid for cid in online if cid not in self.active and self.failed_at_s.get(cid) != now_s]
        if not idle and not self.active:
            raise RuntimeError(f"fedbuff: every online client failed at {now_s:.3f} s without the clock "
                               "moving; no update can arrive")
        return idle

    def _start_task(self, cid: int) -> AsyncTask:
        """Send `cid` the global version current now and start its script on the clock. Its fit is
        submitted to the backend at once, so clients starting together compute in parallel."""
        p = self.parts
        self.n_tasks += 1
        rnd = self.version + 1
        kill = {cid} if (rnd, cid) in self.kills else set()
        self.kills -= {(rnd, cid)}
        index, ins = p.configure_fit(self.n_tasks, [cid])  # the task's number seeds its batches
        ctx = RoundContext(rnd, ins, kill=kill, dropouts=p.selection.dropouts(self.n_tasks, [cid]))
        p.clients.prefetch(ctx)
        task = AsyncTask(cid, self.version, ctx, ins_index=index)
        task.proc = p.env.process(self._async_client(task))
        self.round.started.append(cid)
        return task

    def _async_client(self, task: AsyncTask) -> Generator:
        """The client's script on the clock; an arriving update is stamped with the server version."""
        yield from self.parts.clients.round(task.ctx, task.cid)
        if task.cid in task.ctx.results:
            task.arrival_version = self.version

    def _settle(self, task: AsyncTask) -> None:
        """Account a finished task in the round in progress: a failure is recorded; an update joins
        the buffer, or is discarded (cause stale) when older than policy.max_staleness."""
        max_staleness = self.parts.scenario.policy.max_staleness
        if task.cid in task.ctx.failures:
            self.failed_at_s[task.cid] = task.timeline.end_s
            cause = task.ctx.failures[task.cid].cause
            self._record_task(task, failure_outcome(cause), cause)
        elif max_staleness is not None and task.staleness > max_staleness:
            self._record_task(task, "discarded", "stale")
        else:
            self.round.buffer.append(task)
            self._record_task(task, "ok", "")

    def _server_version(self) -> None:
        """Aggregate the full buffer into the next server version, evaluate per eval.every and
        write its rounds.csv row; at the last version, clients still at work are discarded."""
        p = self.parts
        acc, buffer = self.round, self.round.buffer
        metrics, server_s = p.server.step(acc.rnd, lambda: p.framework.aggregate_buffered(
            acc.rnd, [t.result for t in buffer], [t.ins for t in buffer], [t.staleness for t in buffer]),
            len(buffer), p.framework.aggregate_cost_s(acc.rnd, len(buffer)))
        self.version += 1
        if self.version == p.scenario.framework.rounds:
            self._end_run()
        host_eval_s = 0.0
        if p.evaluates(acc.rnd):
            evaluated, host_eval_s = p.evaluate(acc.rnd)
            metrics.update(evaluated)
        self._record_server_round(metrics, server_s, host_eval_s)
        p.recorder.flush()
        self.round = ServerRound(acc.rnd + 1, p.env.now, time.perf_counter())

    def _end_run(self) -> None:
        """The last version exists: a client that failed meanwhile is a failure, every other
        client still at work (or arrived too late) is discarded, cause run_ended."""
        for task in self.active.values():
            if task.cid in task.ctx.failures:
                self._settle(task)
                continue
            if task.proc.is_alive:
                task.timeline.cut_at(self.parts.env.now)
            self._record_task(task, "discarded", "run_ended")
        self.active.clear()

    def _record_task(self, task: AsyncTask, outcome: str, cause: str) -> None:
        """A task's client_rounds.csv row, in the round it is accounted in."""
        task.outcome = outcome
        self.round.accounted.append(task)
        row = self.parts.recording.client_row(self.round.rnd, task.cid, task.timeline,
                                              task.result if outcome == "ok" else None, outcome, cause)
        self.parts.recorder.client_round(**row, start_version=task.start_version, staleness=task.staleness)

    def _record_server_round(self, metrics: dict, server_s: float, host_eval_s: float) -> None:
        acc, now = self.round, self.parts.env.now
        self.parts.recorder.round(
            round=acc.rnd, sim_start_s=acc.sim_start_s, sim_end_s=now, sim_duration_s=now - acc.sim_start_s,
            selected=" ".join(map(str, sorted(set(acc.started)))), participants=len(acc.buffer),
            failures=sum(t.outcome in FAILED_OUTCOMES for t in acc.accounted),
            discarded=sum(t.outcome == "discarded" for t in acc.accounted), straggler=acc.buffer[-1].cid,
            wasted_compute_s=sum((t.timeline.device_s for t in acc.accounted if t.outcome != "ok"), 0.0),
            **traffic(t.timeline for t in acc.accounted),
            server_compute_s=server_s, host_round_s=time.perf_counter() - acc.host_t0 - host_eval_s,
            host_fit_s=acc.host_fit_s, host_eval_s=host_eval_s,
            mean_staleness=float(np.mean([t.staleness for t in acc.buffer])), **metrics,
        )
