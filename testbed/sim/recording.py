"""The rows the clock writes: one client_rounds.csv row per client-round and one rounds.csv
row per synchronous round (FedBuff writes its own, testbed.sim.fedbuff)."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import simpy

from testbed.config.fleet import FleetClient
from testbed.protocol import FitRes
from testbed.results.energy import energy_values
from testbed.results.recorder import CLIENT_ROUND_COLUMNS, RunRecorder, failure_outcome
from testbed.sim.timeline import ClientTimeline, RoundContext


class Recording:
    def __init__(self, recorder: RunRecorder, clients: list[FleetClient], env: simpy.Environment) -> None:
        self.hostname = socket.gethostname()  # the `host` of rows whose backend names no machine
        self.recorder = recorder
        self.clients = clients
        self.env = env

    def round0(self, metrics: dict[str, Any], host_eval_s: float) -> None:
        """Round 0: the model before training."""
        self.recorder.round(round=0, sim_start_s=0.0, sim_end_s=0.0, sim_duration_s=0.0, selected="",
                            participants=0, failures=0, host_eval_s=host_eval_s, **metrics)
        self.recorder.flush()

    def sync_round(self, ctx: RoundContext, sim_start: float, metrics: dict, server_s: float,
                   host_round_s: float, host_fit_s: float, host_eval_s: float) -> None:
        """A synchronous round's client rows, then its rounds.csv row."""
        arrived = [cid for cid, tl in ctx.timelines.items() if tl.arrived]
        for cid in sorted(ctx.timelines):
            self._client_round(ctx, cid)
        last = max(arrived, key=lambda c: (ctx.timelines[c].end_s, c)) if arrived else None
        tls = ctx.timelines.values()
        self.recorder.round(
            round=ctx.rnd, sim_start_s=sim_start, sim_end_s=self.env.now, sim_duration_s=self.env.now - sim_start,
            selected=" ".join(map(str, sorted(ctx.ins))), participants=len(arrived),
            failures=len(ctx.failures), discarded=len(ctx.discarded - set(ctx.failures)), straggler=last,
            wasted_compute_s=sum((ctx.timelines[c].device_s for c in ctx.timelines if c not in ctx.results), 0.0),
            **traffic(tls), server_compute_s=server_s, host_round_s=host_round_s, host_fit_s=host_fit_s,
            host_eval_s=host_eval_s, **metrics,
        )

    def _client_round(self, ctx: RoundContext, cid: int) -> None:
        outcome = ctx.results.get(cid) or ctx.failures.get(cid)
        ok = isinstance(outcome, FitRes)
        late = cid in ctx.discarded and not ok and cid not in ctx.failures
        self.recorder.client_values(self.client_values(
            ctx.rnd, cid, ctx.timelines[cid], outcome if ok else None,
            "ok" if ok else ("discarded" if late else failure_outcome(outcome.cause)),
            "" if ok else ("late" if late else outcome.cause),
        ))

    def client_row(self, rnd: int, cid: int, tl: ClientTimeline, result: FitRes | None, outcome: str,
                   cause: str) -> dict[str, Any]:
        """One client_rounds.csv row; `result` is the update when the outcome is ok."""
        return dict(zip(CLIENT_ROUND_COLUMNS, self.client_values(rnd, cid, tl, result, outcome, cause), strict=True))

    def client_values(self, rnd: int, cid: int, tl: ClientTimeline, result: FitRes | None, outcome: str,
                      cause: str) -> tuple[Any, ...]:
        """`client_row`'s values in CLIENT_ROUND_COLUMNS' order (a fleet round makes tens of thousands)."""
        client = self.clients[cid]
        peak_mb = tl.peak_rss_bytes / 2**20
        link = client.link
        return (
            rnd, cid, client.name, link.name, outcome, cause,  # round, client, device, link, outcome, cause
            result.n_samples if result else 0, result.metrics.get("train_loss") if result else None,
            tl.host_s, tl.device_s, tl.factor, tl.bound,  # host_compute_s, device_compute_s, dilation_factor, bound
            peak_mb, client.memory_budget_mb, bool(peak_mb > client.memory_budget_mb or outcome == "oom"),
            tl.bytes_down, tl.bytes_up, tl.start_s, tl.end_s,  # ..., over_memory_budget, bytes_down, ..., sim_end_s
            *energy_values(client.device.name, client.device.power_w, tl.device_s, link.name, link.radio,
                           tl.exchanges),  # energy_j, compute_energy_j, radio_energy_j, energy_note
            tl.host or self.hostname,  # host
        )


def traffic(tls: Iterable[ClientTimeline]) -> dict[str, int]:
    """The bytes columns of a rounds.csv row, summed over the clients' timelines."""
    tls = list(tls)
    return dict(bytes_up=sum(t.bytes_up for t in tls), bytes_down=sum(t.bytes_down for t in tls),
                wire_bytes_up=sum(t.wire_up for t in tls), wire_bytes_down=sum(t.wire_down for t in tls))
