"""Synchronous rounds: select, configure, run every client on the clock, aggregate, evaluate.

`SyncRounds` (`policy.kind: wait_all`) closes a round when every selected client has arrived
or failed; `DeadlineRounds` (`deadline`) selects ceil((1 + over_selection) x clients_per_round)
and closes at the clients_per_round-th arrival or at `deadline_s`, discarding the rest.
"""

from __future__ import annotations

import math
import time

from testbed.protocol import Failure, FitRes
from testbed.sim.policy import OnRound, RoundPolicy
from testbed.sim.timeline import RoundContext


class SyncRounds(RoundPolicy):
    kind = "wait_all"

    def run(self, on_round: OnRound | None) -> None:
        for rnd in range(1, self.parts.scenario.framework.rounds + 1):
            self.run_round(rnd)
            if on_round:
                on_round(self.parts.recorder.rounds[-1])
            self.parts.checkpoints.after_round(rnd)

    def selection_size(self) -> int:
        """How many clients a round selects."""
        return self.parts.scenario.framework.clients_per_round

    def keep(self) -> int | None:
        """The round closes at this many arrivals (None: when everyone arrived or failed)."""
        return None

    def deadline_s(self) -> float | None:
        """Simulated seconds after which the round closes with what arrived (None: no deadline)."""
        return None

    def run_round(self, rnd: int) -> None:
        p = self.parts
        host_t0 = time.perf_counter()
        selected = p.selection.select(rnd, self.selection_size())
        _, ins = p.configure_fit(rnd, selected)
        ctx = RoundContext(rnd, ins, kill={k.client for k in p.scenario.faults.kill if k.round == rnd},
                           dropouts=p.selection.dropouts(rnd, selected), keep=self.keep())
        p.progress(f"round {rnd}: {len(selected)} clients computing")
        t_clients = time.perf_counter()
        p.clients.prefetch(ctx)
        sim_start = p.env.now
        ctx.enough = p.env.event()  # the deadline policy's K-th arrival
        procs = [p.env.process(p.clients.round(ctx, cid)) for cid in selected]
        ends = [p.env.all_of(procs), ctx.enough]
        if self.deadline_s() is not None:
            ends.append(p.env.timeout(self.deadline_s()))
        p.env.run(until=p.env.any_of(ends))
        ctx.closed = True
        ctx.discarded = {cid for cid, proc in zip(selected, procs, strict=True) if proc.is_alive}
        for cid in ctx.discarded - ctx.failures.keys():  # still at work: their rows end at the close
            if cid in ctx.timelines:
                ctx.timelines[cid].cut_at(p.env.now)
        host_fit_s = time.perf_counter() - t_clients - ctx.server_host_s
        results = [ctx.results[cid] for cid in sorted(ctx.results)]
        metrics, server_s = self._aggregate(rnd, results, list(ctx.failures.values()))
        host_eval_s = 0.0
        if p.evaluates(rnd):
            evaluated, host_eval_s = p.evaluate(rnd)
            metrics.update(evaluated)
        host_round_s = time.perf_counter() - host_t0 - host_eval_s
        p.recording.sync_round(ctx, sim_start, metrics, server_s, host_round_s, host_fit_s, host_eval_s)
        p.recorder.flush()

    def _aggregate(self, rnd: int, results: list[FitRes], failures: list[Failure]) -> tuple[dict, float]:
        framework = self.parts.framework
        return self.parts.server.step(
            rnd, lambda: framework.aggregate_fit(rnd, sorted(results, key=lambda r: r.client_id), failures),
            len(results), framework.aggregate_cost_s(rnd, len(results)))


class DeadlineRounds(SyncRounds):
    kind = "deadline"

    def selection_size(self) -> int:
        policy = self.parts.scenario.policy
        return math.ceil((1 + policy.over_selection) * self.parts.scenario.framework.clients_per_round - 1e-9)

    def keep(self) -> int | None:
        return self.parts.scenario.framework.clients_per_round

    def deadline_s(self) -> float | None:
        return self.parts.scenario.policy.deadline_s
