"""The probe behind `emulation.compute: predicted`: a short real run of the scenario's framework
that measures what one client-round does and costs on this host (testbed.sim.costs).

It runs the framework for real, on the scenario's model, data shapes, precision and backend,
with as many clients as the run would compute in parallel (its threads per client and
concurrency), at the host concurrency the clock gives their calls (prefetched calls at once,
the others one at a time), for each round where a client's work changes shape (Framework.phase_rounds:
e.g. KD's clients distil from the round the teacher's logits first come down). Each client's
script is followed step by step: payloads keep their real serialised sizes, client calls their
measured spans and peak memory, server calls their measured seconds. The aggregation is timed
over one update and over `AGGREGATE_UPDATES` (the round's updates repeated), which gives its
fixed and per-update costs. The clients' steps are averaged position by position.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean

from testbed.config.emulation import PROBE_MAX_CLIENTS
from testbed.config.scenario import Scenario, ScenarioError
from testbed.protocol import ClientCall, Failure, FitRes, Framework, Send, ServerCall, ServerContext
from testbed.sim.costs import CallCost, CostTable, RoundCost, SendCost, ServerCost, SpanCost, Step

AGGREGATE_UPDATES = 8  # the aggregation is also timed over this many updates (its per-update cost)


class ProbeError(ScenarioError):
    """The probe could not measure the scenario's work (its client failed): the run exits 2."""


@dataclass(frozen=True)
class _Delivered:
    """What a script receives for a Send in the probe: every transfer arrives."""

    status: str = "ok"


def probe_concurrency(scenario: Scenario) -> int:
    """Clients computing at once in the run (and so in the probe)."""
    emu = scenario.emulation
    n = emu.parallel_clients if isinstance(emu.parallel_clients, int) else \
        len(os.sched_getaffinity(0)) // emu.threads_per_client
    return max(1, min(n, scenario.n_clients, PROBE_MAX_CLIENTS))


def probe_scenario(scenario: Scenario, clients: int, last_round: int, workers: str = "auto") -> Scenario:
    """The scenario as the probe runs it: `clients` of its first device, every round up to
    `last_round` with all of them, nothing that would make a client miss a round (faults,
    availability, dropouts, deadlines), memory measured rather than enforced, in the worker
    layout the run itself would use (`workers`: testbed.sim.startup.worker_layout)."""
    first = scenario.fleet[0].model_copy(update={"count": clients})
    fw = scenario.framework.model_copy(update={"rounds": last_round + 1, "clients_per_round": clients})
    emu = scenario.emulation.model_copy(update={"compute": "measured", "enforce_memory": False, "time": "dilate",
                                                "workers": workers,
                                                "backend": "inproc" if scenario.emulation.backend == "inproc"
                                                else "process"})
    return scenario.model_copy(update={
        "fleet": [first], "framework": fw, "emulation": emu,
        "availability": scenario.availability.model_copy(update={"kind": "always", "dropout": 0.0}),
        "faults": scenario.faults.model_copy(update={"kill": ()}),
        "policy": scenario.policy.model_copy(update={"kind": "wait_all"}),
        # the last probed round is an evaluation round: clients that evaluate themselves (KD's
        # students, off the clock) report those metrics too, so a predicted run has their columns
        "eval": scenario.eval.model_copy(update={"before_training": False, "every": last_round}),
    })


def measure(scenario: Scenario, framework_cls: type[Framework], model_dir: str,
            progress: Callable[[str], None]) -> CostTable:
    """Run the probe and return the cost table (not cached: testbed.sim.predicted does that)."""
    from testbed.config.fleet import expand_fleet
    from testbed.sim import startup

    t0 = time.perf_counter()
    n = probe_concurrency(scenario)
    phases = sorted(set(framework_cls.phase_rounds(scenario)))
    probed = probe_scenario(scenario, n, phases[-1], startup.worker_layout(scenario, framework_cls.client_class))
    layout = startup.worker_layout(probed, framework_cls.client_class)
    probed, speedup = startup.choose_precision(probed, framework_cls, layout=layout, model_dir=model_dir,
                                               progress=progress)
    clients = expand_fleet(probed)
    with tempfile.TemporaryDirectory(prefix="testbed-probe-") as tmp:
        framework = framework_cls(ServerContext(probed, model_dir, Path(tmp)))
        backend = startup.build_backend(probed, layout, framework_cls.client_class,
                                        startup.client_specs(probed, clients, model_dir), clients, progress=progress)
        try:
            backend.launch()
            framework.setup()
            backend.start()
            calibration = replace(backend.calibration, bf16_step_speedup=speedup)
            rounds = []
            for rnd in range(1, phases[-1] + 1):
                progress(f"probing round {rnd} of {phases[-1]}: {n} client(s) of {probed.fleet[0].device} at once")
                cost = _probe_round(framework, backend, rnd, [c.client_id for c in clients])
                if rnd in phases:
                    rounds.append(cost)
        finally:
            backend.close()
    return CostTable({}, calibration, probed.framework.precision, tuple(rounds), n, time.perf_counter() - t0)


def _probe_round(framework: Framework, backend, rnd: int, ids: list[int]) -> RoundCost:
    """One round of the probe's clients, with the host's concurrency as the clock has it: the
    calls a framework prefetches run at once (in the backend's slots), every other client or
    server call one at a time (the clock waits on each)."""
    ins = framework.configure_fit(rnd, ids)
    prefetched = {}
    for cid in ids:
        call = framework.prefetch(rnd, cid, ins[cid])
        if call is not None:
            prefetched[cid] = (call, backend.submit(cid, rnd, call.method, call.args))
    traced = [_follow(framework, backend, rnd, cid, ins[cid], prefetched.get(cid)) for cid in ids]
    results = [res for _, res in traced]
    _, one_s = _timed(lambda: framework.aggregate_fit(rnd, results[:1], []))
    many = [results[k % len(results)] for k in range(AGGREGATE_UPDATES)]
    metrics, many_s = _timed(lambda: framework.aggregate_fit(rnd, many, []))
    per_update_s = max(0.0, (many_s - one_s) / (AGGREGATE_UPDATES - 1))
    return RoundCost(rnd, _average([steps for steps, _ in traced]), max(0.0, one_s - per_update_s), per_update_s,
                     tuple(metrics))


def _timed(work: Callable[[], dict]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = work()
    return out, time.perf_counter() - t0


def _follow(framework: Framework, backend, rnd: int, cid: int, ins, prefetched) -> tuple[list[Step], FitRes]:
    """Client `cid`'s script run for real, as the steps it took; `prefetched`: (call, future)
    of a call started at round start, or None."""
    script = framework.client_script(rnd, cid, ins)
    steps: list[Step] = []
    reply = None
    while True:
        try:
            action = script.send(reply)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(action, Send):
            steps.append(SendCost(action.direction, action.payload.kind, action.payload.payload_bytes))
            reply = _Delivered()
        elif isinstance(action, ServerCall):
            t0 = time.perf_counter()
            reply = action.fn(*action.args)
            steps.append(ServerCost(action.label, time.perf_counter() - t0))
        elif isinstance(action, ClientCall):
            if prefetched is not None and prefetched[0] == action:
                reply, prefetched = prefetched[1].result(), None
            else:
                reply = backend.submit(cid, rnd, action.method, action.args).result()
            if isinstance(reply, Failure):
                result = reply
                break
            spans = tuple(SpanCost(s.label, s.host_s, s.workload.flops, s.workload.bytes_moved, s.precision)
                          for s in getattr(reply, "spans", ()))
            steps.append(CallCost(action.method, spans, int(getattr(reply, "peak_rss_bytes", 0) or 0)))
    if not isinstance(result, FitRes):
        detail = f"{result.cause}: {result.detail}" if isinstance(result, Failure) else repr(result)
        raise ProbeError(f"emulation.compute: predicted: the probe's client {cid} failed in round {rnd} ({detail}); "
                         "its work cannot be measured: run the scenario measured to see why")
    return steps, result


def _shape(step: Step) -> tuple:
    if isinstance(step, SendCost):
        return ("send", step.direction, step.kind)
    if isinstance(step, ServerCost):
        return ("server", step.label)
    return ("call", step.method, tuple(s.label for s in step.spans))


def _average(traces: list[list[Step]]) -> tuple[Step, ...]:
    """The clients' steps averaged position by position (sizes, seconds, work; the highest
    peak memory); the first client's where their scripts took different shapes."""
    if any([_shape(s) for s in t] != [_shape(s) for s in traces[0]] for t in traces):
        return tuple(traces[0])
    out: list[Step] = []
    for column in zip(*traces, strict=True):
        first = column[0]
        if isinstance(first, SendCost):
            out.append(replace(first, payload_bytes=round(mean(s.payload_bytes for s in column))))
        elif isinstance(first, ServerCost):
            out.append(replace(first, host_s=mean(s.host_s for s in column)))
        else:
            spans = tuple(replace(span, host_s=mean(c.spans[i].host_s for c in column),
                                  flops=mean(c.spans[i].flops for c in column),
                                  bytes_moved=mean(c.spans[i].bytes_moved for c in column))
                          for i, span in enumerate(first.spans))
            out.append(CallCost(first.method, spans, max(c.peak_rss_bytes for c in column)))
    return tuple(out)

