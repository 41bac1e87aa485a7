"""The round loop, written once: configure -> run clients -> simulate -> aggregate -> evaluate.

Real work runs first on the host (in parallel where the backend allows); its measured
durations, converted to device time, and its real payload sizes then enter the simpy
simulation, which decides when each client's update arrives. The simulated clock is one
simpy Environment for the whole run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from network import NO_OVERHEAD, TCP_IP, Network, Outage, OutagePolicy
from testbed.backends import Backend, make_backend
from testbed.config.availability import ALWAYS, Schedule, diurnal, load_fedscale
from testbed.config.fleet import FleetClient, Topology, build_topology, device_compute, expand_fleet
from testbed.sim.frameworks import framework_class
from testbed.config.scenario import AvailabilityConfig, Scenario, ScenarioError
from testbed.host.calibration import HostCalibration
from testbed.host.roofline import dilate, host_peak_gflops
from testbed.ml.memory import release_freed_memory
from testbed.ml.taskdata import build_task_data
from testbed.protocol import (
    ClientCall,
    ClientSpec,
    Failure,
    FitIns,
    FitRes,
    Framework,
    Outcome,
    Payload,
    Send,
    ServerCall,
    ServerContext,
)
from testbed.results.energy import Exchange, client_round_energy
from testbed.results.recorder import FAILED_OUTCOMES, RunRecorder, failure_outcome
from testbed.sim.replay import ComputeReplay


def schedules(cfg: AvailabilityConfig, n_clients: int, seed: int) -> list[Schedule]:
    if cfg.kind == "always":
        return [ALWAYS] * n_clients
    if cfg.kind == "diurnal":
        return diurnal(n_clients, period_s=cfg.period_s, on_fraction=cfg.on_fraction, seed=seed)
    return load_fedscale(cfg.path, n_clients)


SERVER = -1  # the `client` column of server-side rows
AVAILABILITY_HORIZON_S = 90 * 86400.0  # offline periods become link outages up to this simulated time


@dataclass
class ClientTimeline:
    """What one client did in one round, in simulated seconds."""

    start_s: float = 0.0
    end_s: float = 0.0
    device_s: float = 0.0
    host_s: float = 0.0
    factor: float = float("nan")
    bound: str = ""
    bytes_down: int = 0
    bytes_up: int = 0
    wire_down: int = 0
    wire_up: int = 0
    peak_rss_bytes: int = 0
    exchanges: list[Exchange] = field(default_factory=list)  # its transfers, for the radio energy
    arrived: bool = False
    offline_at_s: float = math.inf  # when the client's availability window ends


@dataclass
class RoundContext:
    rnd: int
    ins: dict[int, FitIns]
    kill: set[int]  # clients whose first call this round is killed (fault injection)
    prefetched: dict[int, tuple[ClientCall, Future]] = field(default_factory=dict)
    results: dict[int, FitRes] = field(default_factory=dict)
    failures: dict[int, Failure] = field(default_factory=dict)
    timelines: dict[int, ClientTimeline] = field(default_factory=dict)
    server_host_s: float = 0.0  # host seconds of server calls made during the round
    enough: Any = None  # simpy event: the round has the arrivals it keeps
    dropouts: set[int] = field(default_factory=set)  # clients that drop out after their first work
    keep: int | None = None  # deadline policy: the round closes at this many arrivals
    closed: bool = False  # no more arrivals are kept (the rest is wasted work)
    discarded: set[int] = field(default_factory=set)  # still working when the round closed


@dataclass(eq=False)
class AsyncTask:
    """One client's work under `policy.kind: fedbuff`, from the global version it started
    from to its arrival or failure. Its events carry round start_version + 1."""

    cid: int
    start_version: int
    ctx: RoundContext  # the client's own context: its FitIns, timeline, result or failure
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


@dataclass
class FedBuffState:
    """The asynchronous server: its version, the clients at work, the round in progress."""

    round: ServerRound
    kills: set[tuple[int, int]]  # (round, client) fault injections not yet applied
    version: int = 0
    active: dict[int, AsyncTask] = field(default_factory=dict)
    n_tasks: int = 0  # tasks started so far (seeds selection, batches and dropouts)
    failed_at_s: dict[int, float] = field(default_factory=dict)  # client -> when it last failed


class Runner:
    """Runs one scenario into one run directory."""

    def __init__(self, scenario: Scenario, out_dir: Path, *, model_dir: str,
                 replay: ComputeReplay | None = None, progress: Callable[[str], None] | None = None) -> None:
        self.scenario = scenario
        self.out_dir = Path(out_dir)
        self.model_dir = model_dir
        self.replay = replay
        self.progress = progress or (lambda _msg: None)
        self.recorder = RunRecorder(self.out_dir)
        self.clients = expand_fleet(scenario)
        self.env = simpy.Environment()
        overhead = TCP_IP if scenario.emulation.protocol_overhead else NO_OVERHEAD
        policy = OutagePolicy(scenario.network.on_outage, scenario.network.outage_timeout_s)
        self.net = Network(self.env, overhead=overhead, outage_policy=policy)
        self.schedules: list[Schedule] = schedules(scenario.availability, len(self.clients), scenario.seed)
        self.topology: Topology = build_topology(self.net, scenario, self.clients, self._link_outages())
        self.server = simpy.Resource(self.env, capacity=1)  # server compute: one request at a time
        self.framework: Framework | None = None
        self.backend: Backend | None = None
        self._calibration: HostCalibration | None = None
        self.bf16_step_speedup: float | None = None  # measured at start() where bf16 is used
        self.layout = "per_client"  # emulation.workers as resolved at start()
        self.eval_on_group = False  # the data-parallel group evaluates (set at start())
        self.throttled: dict[int, float] = {}  # client -> CPU quota (cores) under `time: throttle`

    # -- set-up ----------------------------------------------------------------------------
    def _link_outages(self) -> dict[int, list[Outage]]:
        """Per client: the scenario's link outages plus its offline periods, merged."""
        out = {}
        for c in self.clients:
            windows = sorted([*self.scenario.network.outages,
                              *self.schedules[c.client_id].offline_windows(AVAILABILITY_HORIZON_S)])
            merged: list[list[float]] = []
            for t1, t2 in windows:
                if merged and t1 <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], t2)
                else:
                    merged.append([t1, t2])
            out[c.client_id] = [Outage(t1, t2) for t1, t2 in merged if t2 > t1]
        return out

    def _specs(self) -> list[ClientSpec]:
        data = build_task_data(self.scenario)
        threads = self.scenario.emulation.threads_per_client
        return [
            ClientSpec(c.client_id, self.scenario, self.model_dir, data.client_indices[c.client_id],
                       threads=min(c.device.cpu_cores, threads))
            for c in self.clients
        ]

    def worker_layout(self, client_class: type) -> str:
        """`emulation.workers` resolved: per_client, pool or data_parallel (process backend)."""
        emu, fw = self.scenario.emulation, self.scenario.framework
        problem = None
        if not client_class.data_parallel:
            problem = f"framework {fw.name} does not split its clients' work across ranks"
        elif fw.batch_size < emu.threads_per_client:
            problem = f"framework.batch_size={fw.batch_size} has fewer rows than the {emu.threads_per_client} ranks"
        elif fw.lora.dropout > 0:
            problem = "framework.lora.dropout > 0 draws from each rank's random stream in another order"
        if emu.workers == "data_parallel":
            if problem:
                raise ScenarioError(f"emulation.workers: data_parallel: {problem}")
            return "data_parallel"
        if not emu.pooled:
            return "per_client"
        one_at_a_time = emu.parallel_clients == 1 or (
            emu.parallel_clients == "auto" and len(os.sched_getaffinity(0)) // emu.threads_per_client <= 1)
        if emu.workers == "auto" and emu.threads_per_client >= 2 and one_at_a_time and problem is None:
            return "data_parallel"
        return "pool"

    def _make_backend(self) -> Backend:
        emu, layout = self.scenario.emulation, self.layout
        return make_backend(
            emu.backend, self.framework.client_class, self._specs(), threads=emu.threads_per_client,
            parallel=None if emu.parallel_clients == "auto" else emu.parallel_clients,
            memory_limits_bytes={c.client_id: int(c.memory_budget_mb * 2**20) for c in self.clients},
            enforce_memory=emu.enforce_memory, cpu_quotas=emu.time == "throttle", timeout_s=emu.client_timeout_s,
            pool=layout == "pool", data_parallel=layout == "data_parallel",
            run_id=f"{self.scenario.name}-{int(time.time())}",
        )

    def start(self) -> None:
        from testbed.ml.modeling import server_device

        cls = framework_class(self.scenario.framework.name)
        self.layout = self.worker_layout(cls.client_class) if self.scenario.emulation.backend == "process" \
            else "per_client"
        self._choose_precision(cls)
        self.eval_on_group = (self.layout == "data_parallel" and self.scenario.policy.kind != "fedbuff"
                               and server_device(self.scenario.server.device).type == "cpu")
        self.framework = cls(ServerContext(self.scenario, self.model_dir, self.out_dir,
                                           clients_evaluate=self.eval_on_group))
        self.backend = self._make_backend()
        server = "the clients evaluate, the server loads no model" if self.eval_on_group else "loading the server model"
        self.progress(f"{server}; starting {len(self.clients)} client workers ({self.scenario.emulation.backend})")
        with ThreadPoolExecutor(1, thread_name_prefix="launch") as pool:  # workers load beside the server
            launched = pool.submit(self.backend.launch)
            self.framework.setup()
            launched.result()
        self.backend.start()  # calibrates, now that nothing else runs
        self._adopt_client_state()
        self._calibration = replace(self.backend.calibration, bf16_step_speedup=self.bf16_step_speedup)
        if self.scenario.emulation.time == "throttle":
            self.throttled = self.backend.set_cpu_quotas(self._cpu_quotas())
            self._warn_unthrottled()

    def _adopt_client_state(self) -> None:
        """Where the server left its model unloaded (its evaluation runs on the clients' group),
        its starting state is a client's freshly built one (Framework.client_initial_state);
        if that call fails, the server builds its own."""
        call = self.framework.client_initial_state()
        if call is None:
            return
        answer = self.backend.submit(min(self.backend.specs), 0, *call).result()
        self.framework.adopt_initial_state(None if isinstance(answer, Failure) else answer)

    def _cpu_quotas(self) -> dict[int, float]:
        """Cores that make the host as slow as each device (compute-bound); only for devices
        slower than the host: a quota cannot speed a process up."""
        quotas = {}
        for c in self.clients:
            factor = self._compute_bound_factor(c)
            if factor > 1.0:
                quotas[c.client_id] = self.scenario.emulation.threads_per_client / factor
        return quotas

    def _warn_unthrottled(self) -> None:
        import warnings

        fast = [c.name for c in self.clients if c.client_id not in self.throttled]
        if fast:
            warnings.warn(f"time: throttle: not throttled, time dilated instead (device at least as fast as "
                          f"this host, or no cgroups): {', '.join(fast)}", stacklevel=2)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    @property
    def calibration(self) -> HostCalibration:
        if self._calibration is None:
            raise RuntimeError("runner not started")
        return self._calibration

    def _choose_precision(self, framework: type) -> None:
        """Resolve `framework.precision` (auto) before anything reads it; where clients train
        under bf16 autocast, keep the measured speed-up of a real training step
        (testbed.host.precision): bf16 spans are dilated with it."""
        from testbed.host.precision import choose, native_bf16
        from testbed.ml.assets import cache_dir

        fw = self.scenario.framework
        self.bf16_step_speedup = None
        if not framework.client_autocast:  # only the server's evaluation would use it
            precision = "bf16" if fw.precision == "bf16" or (fw.precision == "auto" and native_bf16()) else "fp32"
        else:
            if fw.precision != "fp32":
                self.progress("measuring a training step in fp32 and bf16 (once per host, model and shape)")
            threads = 1 if self.layout == "data_parallel" else self.scenario.emulation.threads_per_client
            precision, self.bf16_step_speedup = choose(self.scenario, self.model_dir, cache=cache_dir(),
                                                       threads=threads)  # a data-parallel rank runs one thread
        self.scenario = self.scenario.model_copy(
            update={"framework": fw.model_copy(update={"precision": precision})})

    # -- the loop ----------------------------------------------------------------------------
    def run(self, on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        if self.scenario.eval.before_training:
            self._record_round0()
            if on_round:
                on_round(self.recorder.rounds[-1])
        if self.scenario.policy.kind == "fedbuff":
            self.run_fedbuff(on_round)
        else:
            for rnd in range(1, self.scenario.framework.rounds + 1):
                self.run_round(rnd)
                if on_round:
                    on_round(self.recorder.rounds[-1])
        self.framework.save(self.out_dir)
        return self.recorder.rounds

    def _record_round0(self) -> None:
        metrics, host_eval_s = self._evaluate(0)
        self.recorder.round(round=0, sim_start_s=0.0, sim_end_s=0.0, sim_duration_s=0.0, selected="",
                            participants=0, failures=0, host_eval_s=host_eval_s, **metrics)
        self.recorder.flush()

    def select(self, rnd: int) -> list[int]:
        """Seeded choice among the clients online now: clients_per_round of them, or
        ceil((1 + over_selection) x clients_per_round) under the deadline policy (fewer
        when fewer are online). With nobody online the clock first advances to the next
        time someone comes online."""
        online = self._online_now()
        rng = np.random.default_rng([self.scenario.seed, rnd])
        k = self.scenario.framework.clients_per_round
        policy = self.scenario.policy
        if policy.kind == "deadline":
            k = math.ceil((1 + policy.over_selection) * k - 1e-9)
        k = min(k, len(online))
        if len(online) == len(self.clients):
            return sorted(int(c) for c in rng.choice(len(self.clients), size=k, replace=False))
        return sorted(int(c) for c in rng.choice(np.array(online), size=k, replace=False))

    def _online_now(self) -> list[int]:
        online = [c.client_id for c in self.clients if self.schedules[c.client_id].online(self.env.now)]
        if online:
            return online
        back_s = min(s.next_online(self.env.now) for s in self.schedules)
        if math.isinf(back_s):
            raise RuntimeError(f"no client is online at {self.env.now:.0f} s or later: the availability ends")
        self.env.run(until=back_s)
        return self._online_now()

    def _dropouts(self, rnd: int, selected: list[int]) -> set[int]:
        p = self.scenario.availability.dropout
        if not p:
            return set()
        rng = np.random.default_rng([self.scenario.seed, rnd, 0xD0])
        return {cid for cid, u in zip(selected, rng.random(len(selected)), strict=True) if u < p}

    def run_round(self, rnd: int) -> None:
        host_t0 = time.perf_counter()
        selected = self.select(rnd)
        ins = self.framework.configure_fit(rnd, selected)
        ctx = RoundContext(rnd, ins, kill={k.client for k in self.scenario.faults.kill if k.round == rnd},
                           dropouts=self._dropouts(rnd, selected))
        policy = self.scenario.policy
        if policy.kind == "deadline":
            ctx.keep = self.scenario.framework.clients_per_round
        self.progress(f"round {rnd}: {len(selected)} clients computing")
        t_clients = time.perf_counter()
        self._prefetch(ctx)
        sim_start = self.env.now
        ctx.enough = self.env.event()  # the deadline policy's K-th arrival
        procs = [self.env.process(self.client_round(ctx, cid)) for cid in selected]
        ends = [self.env.all_of(procs), ctx.enough]
        if policy.kind == "deadline" and policy.deadline_s is not None:
            ends.append(self.env.timeout(policy.deadline_s))
        self.env.run(until=self.env.any_of(ends))
        ctx.closed = True
        ctx.discarded = {cid for cid, p in zip(selected, procs, strict=True) if p.is_alive}
        host_fit_s = time.perf_counter() - t_clients - ctx.server_host_s
        results = [ctx.results[cid] for cid in sorted(ctx.results)]
        metrics, server_s = self._aggregate(rnd, results, list(ctx.failures.values()))
        host_eval_s = 0.0
        if rnd % self.scenario.eval.every == 0 or rnd == self.scenario.framework.rounds:
            evaluated, host_eval_s = self._evaluate(rnd)
            metrics.update(evaluated)
        host_round_s = time.perf_counter() - host_t0 - host_eval_s
        self._record_round(ctx, sim_start, metrics, server_s, host_round_s, host_fit_s, host_eval_s)
        self.recorder.flush()

    def _evaluate(self, rnd: int) -> tuple[dict, float]:
        """The framework's evaluation of round `rnd`'s model, and its host seconds: on the
        data-parallel group where there is one and the server computes on the CPU (its ranks
        share the held-out set; the server's own threads would run ops too small to split),
        else on the server."""
        t0 = time.perf_counter()
        call = self.framework.client_evaluation(rnd) if self.eval_on_group else None  # fedbuff: fits may queue there
        metrics = self.backend.submit(min(self.backend.specs), rnd, *call).result() if call else None
        on_server = not isinstance(metrics, dict)
        if on_server:  # no group, or its evaluation failed: the server evaluates
            metrics = self.framework.evaluate(rnd)
        host_s = time.perf_counter() - t0
        self.recorder.host_interval(rnd, "server", "eval", time.time(), host_s)
        if on_server:
            release_freed_memory()  # the server holds its model while clients train, not evaluation's batches
        return metrics, host_s

    def _aggregate(self, rnd: int, results: list[FitRes], failures: list[Failure]) -> tuple[dict, float]:
        return self._server_step(
            rnd, lambda: self.framework.aggregate_fit(rnd, sorted(results, key=lambda r: r.client_id), failures),
            len(results))

    def _server_step(self, rnd: int, step: Callable[[], dict], n_updates: int) -> tuple[dict, float]:
        """Run an aggregation for real and hold the simulated clock for its measured time."""
        t0 = time.perf_counter()
        metrics = step()
        host_s = time.perf_counter() - t0
        self.recorder.host_interval(rnd, "server", "aggregate", time.time(), host_s)
        if self.replay is not None:
            host_s, device_s = self.replay.lookup(rnd, SERVER, "aggregate", host_s, host_s)
        else:
            device_s = host_s  # the server is this host: its time is its own
        start = self.env.now
        self.env.run(until=self.env.timeout(device_s))
        self.recorder.event(round=rnd, client=SERVER, kind="aggregate", payload_bytes=0, wire_bytes=0,
                            sim_start_s=start, sim_end_s=self.env.now, host_s=host_s, device_s=device_s,
                            status="ok", detail=f"{n_updates} updates")
        return dict(metrics), device_s

    # -- fedbuff: asynchronous buffered aggregation on the same clock ------------------------
    def run_fedbuff(self, on_round: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`concurrency` clients work at once, each from the global version current when it
        starts; every `buffer_size` arrivals the server makes the next version (one rounds.csv
        row), until `framework.rounds` versions exist. A finished client is replaced at once
        (after the server step its arrival triggered, so the newcomer gets the new version)."""
        fw, policy = self.scenario.framework, self.scenario.policy
        buffer_size = policy.buffer_size or fw.clients_per_round
        concurrency = policy.concurrency or fw.clients_per_round
        fb = FedBuffState(ServerRound(1, self.env.now, time.perf_counter()),
                          kills={(k.round, k.client) for k in self.scenario.faults.kill})
        while fb.version < fw.rounds:
            self._fill_slots(fb, concurrency)
            t0 = time.perf_counter()
            self.env.run(until=self.env.any_of([task.proc for task in fb.active.values()]))
            fb.round.host_fit_s += time.perf_counter() - t0
            finished = sorted((t for t in fb.active.values() if not t.proc.is_alive),
                              key=lambda t: (t.timeline.end_s, t.cid))
            for task in finished:
                if fb.version == fw.rounds:
                    break
                del fb.active[task.cid]
                self._settle(fb, task)
                if len(fb.round.buffer) == buffer_size:
                    self._server_version(fb)
                    if on_round:
                        on_round(self.recorder.rounds[-1])

    def _fill_slots(self, fb: FedBuffState, concurrency: int) -> None:
        """Start clients until `concurrency` are at work: a seeded choice among the idle online ones."""
        free = concurrency - len(fb.active)
        idle = self._idle_online(fb) if free > 0 else []
        if not idle:
            return
        rng = np.random.default_rng([self.scenario.seed, fb.n_tasks, 0xFB])
        for cid in sorted(int(c) for c in rng.choice(np.array(idle), size=min(free, len(idle)), replace=False)):
            fb.active[cid] = self._start_task(fb, cid)

    def _idle_online(self, fb: FedBuffState) -> list[int]:
        """Online clients not at work, except those that failed at this very instant (reselecting
        them could loop forever without the clock moving). With nobody at work, the clock first
        advances to the next time someone is online."""
        if fb.active:
            online = [c.client_id for c in self.clients if self.schedules[c.client_id].online(self.env.now)]
        else:
            online = self._online_now()
        idle = [cid for cid in online if cid not in fb.active and fb.failed_at_s.get(cid) != self.env.now]
        if not idle and not fb.active:
            raise RuntimeError(f"fedbuff: every online client failed at {self.env.now:.3f} s without the clock "
                               "moving; no update can arrive")
        return idle

    def _start_task(self, fb: FedBuffState, cid: int) -> AsyncTask:
        """Send `cid` the global version current now and start its script on the clock. Its fit is
        submitted to the backend at once, so clients starting together compute in parallel."""
        fb.n_tasks += 1
        rnd = fb.version + 1
        kill = {cid} if (rnd, cid) in fb.kills else set()
        fb.kills -= {(rnd, cid)}
        ins = self.framework.configure_fit(fb.n_tasks, [cid])  # the task's number seeds its batches
        ctx = RoundContext(rnd, ins, kill=kill, dropouts=self._dropouts(fb.n_tasks, [cid]))
        self._prefetch(ctx)
        task = AsyncTask(cid, fb.version, ctx)
        task.proc = self.env.process(self._async_client(fb, task))
        fb.round.started.append(cid)
        return task

    def _async_client(self, fb: FedBuffState, task: AsyncTask) -> Generator:
        """The client's script on the clock; an arriving update is stamped with the server version."""
        yield from self.client_round(task.ctx, task.cid)
        if task.cid in task.ctx.results:
            task.arrival_version = fb.version

    def _settle(self, fb: FedBuffState, task: AsyncTask) -> None:
        """Account a finished task in the round in progress: a failure is recorded; an update joins
        the buffer, or is discarded (cause stale) when older than policy.max_staleness."""
        max_staleness = self.scenario.policy.max_staleness
        if task.cid in task.ctx.failures:
            fb.failed_at_s[task.cid] = task.timeline.end_s
            cause = task.ctx.failures[task.cid].cause
            self._record_task(fb.round, task, failure_outcome(cause), cause)
        elif max_staleness is not None and task.staleness > max_staleness:
            self._record_task(fb.round, task, "discarded", "stale")
        else:
            fb.round.buffer.append(task)
            self._record_task(fb.round, task, "ok", "")

    def _server_version(self, fb: FedBuffState) -> None:
        """Aggregate the full buffer into the next server version, evaluate per eval.every and
        write its rounds.csv row; at the last version, clients still at work are discarded."""
        acc, rounds = fb.round, self.scenario.framework.rounds
        buffer = acc.buffer
        metrics, server_s = self._server_step(acc.rnd, lambda: self.framework.aggregate_buffered(
            acc.rnd, [t.result for t in buffer], [t.ins for t in buffer], [t.staleness for t in buffer]),
            len(buffer))
        fb.version += 1
        if fb.version == rounds:
            self._end_run(fb)
        host_eval_s = 0.0
        if acc.rnd % self.scenario.eval.every == 0 or acc.rnd == rounds:
            evaluated, host_eval_s = self._evaluate(acc.rnd)
            metrics.update(evaluated)
        self._record_server_round(acc, metrics, server_s, host_eval_s)
        self.recorder.flush()
        fb.round = ServerRound(acc.rnd + 1, self.env.now, time.perf_counter())

    def _end_run(self, fb: FedBuffState) -> None:
        """The last version exists: a client that failed meanwhile is a failure, every other
        client still at work (or arrived too late) is discarded, cause run_ended."""
        for task in fb.active.values():
            if task.cid in task.ctx.failures:
                self._settle(fb, task)
                continue
            if task.proc.is_alive:
                task.timeline.end_s = self.env.now
            self._record_task(fb.round, task, "discarded", "run_ended")
        fb.active.clear()

    def _record_task(self, acc: ServerRound, task: AsyncTask, outcome: str, cause: str) -> None:
        """A task's client_rounds.csv row, in the round it is accounted in."""
        task.outcome = outcome
        acc.accounted.append(task)
        row = self._client_row(acc.rnd, task.cid, task.timeline, task.result if outcome == "ok" else None,
                               outcome, cause)
        self.recorder.client_round(**row, start_version=task.start_version, staleness=task.staleness)

    def _record_server_round(self, acc: ServerRound, metrics: dict, server_s: float, host_eval_s: float) -> None:
        tls = [t.timeline for t in acc.accounted]
        self.recorder.round(
            round=acc.rnd, sim_start_s=acc.sim_start_s, sim_end_s=self.env.now,
            sim_duration_s=self.env.now - acc.sim_start_s, selected=" ".join(map(str, sorted(set(acc.started)))),
            participants=len(acc.buffer), failures=sum(t.outcome in FAILED_OUTCOMES for t in acc.accounted),
            discarded=sum(t.outcome == "discarded" for t in acc.accounted), straggler=acc.buffer[-1].cid,
            wasted_compute_s=sum(t.timeline.device_s for t in acc.accounted if t.outcome != "ok"),
            bytes_up=sum(t.bytes_up for t in tls), bytes_down=sum(t.bytes_down for t in tls),
            wire_bytes_up=sum(t.wire_up for t in tls), wire_bytes_down=sum(t.wire_down for t in tls),
            server_compute_s=server_s, host_round_s=time.perf_counter() - acc.host_t0 - host_eval_s,
            host_fit_s=acc.host_fit_s, host_eval_s=host_eval_s,
            mean_staleness=float(np.mean([t.staleness for t in acc.buffer])), **metrics,
        )

    # -- one client's round: its framework script, interpreted on the clock -----------------
    def _prefetch(self, ctx: RoundContext) -> None:
        """Start the calls whose inputs are known now, all clients at once on the host."""
        for cid, ins in ctx.ins.items():
            call = self.framework.prefetch(ctx.rnd, cid, ins)
            if call is not None:
                kill = cid in ctx.kill
                ctx.kill.discard(cid)
                ctx.prefetched[cid] = (call, self.backend.submit(cid, ctx.rnd, call.method, call.args, kill=kill))

    def client_round(self, ctx: RoundContext, cid: int) -> Generator:
        tl = ctx.timelines.setdefault(cid, ClientTimeline(start_s=self.env.now))
        tl.offline_at_s = self.schedules[cid].offline_at(self.env.now)
        script = self.framework.client_script(ctx.rnd, cid, ctx.ins[cid])
        reply, calls = None, 0
        while not ctx.closed:  # after the round closed, a straggler stops at its next action
            try:
                action = script.send(reply)
            except StopIteration as stop:
                self._arrive(ctx, cid, stop.value, tl)
                return
            if isinstance(action, Send):
                reply = yield from self._send(ctx.rnd, cid, action, tl)
                if reply.status != "ok":
                    cause = "disconnected" if reply.status == "failed" else "timeout"
                    return self._fail(ctx, cid, script, tl, cause, f"{action.payload.kind}: link {reply.status}")
            elif isinstance(action, ServerCall):
                reply = yield from self._server_call(ctx, cid, action)
            else:
                reply = self._client_call(ctx, cid, action)
                calls += 1
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

    def _client_call(self, ctx: RoundContext, cid: int, call: ClientCall) -> Outcome:
        """The call's real result: from the prefetched future when it is that call."""
        pre = ctx.prefetched.pop(cid, None)
        if pre is not None and pre[0] == call:
            return pre[1].result()
        kill = cid in ctx.kill
        ctx.kill.discard(cid)
        return self.backend.submit(cid, ctx.rnd, call.method, call.args, kill=kill).result()

    def _send(self, rnd: int, cid: int, action: Send, tl: ClientTimeline) -> Generator:
        up = action.direction == "up"
        path = self.topology.uplink_path(cid) if up else self.topology.downlink_path(cid)
        rec = yield self.net.transfer(action.payload.payload_bytes, path, label=action.payload.kind)
        self._transfer_event(rnd, cid, action.payload, rec)
        tl.exchanges.append(Exchange(action.direction, rec.wire_bytes, rec.start_s, rec.end_s, rec.status == "ok"))
        if up:
            tl.bytes_up += rec.payload_bytes
            tl.wire_up += rec.wire_bytes
        else:
            tl.bytes_down += rec.payload_bytes
            tl.wire_down += rec.wire_bytes
        return rec

    def _server_call(self, ctx: RoundContext, cid: int, call: ServerCall) -> Generator:
        """Queue on the server; once served, run the real work and hold the server for it."""
        with self.server.request() as turn:
            yield turn
            t0 = time.perf_counter()
            value = call.fn(*call.args)
            host_s = time.perf_counter() - t0
            self.recorder.host_interval(ctx.rnd, "server", call.label, time.time(), host_s)
            ctx.server_host_s += host_s
            device_s = host_s  # the server is this host (its GPU where it has one)
            if self.replay is not None:
                host_s, device_s = self.replay.lookup(ctx.rnd, cid, f"server:{call.label}", host_s, device_s)
            start = self.env.now
            yield self.env.timeout(device_s)
        self.recorder.event(round=ctx.rnd, client=cid, kind="server_compute", payload_bytes=0, wire_bytes=0,
                            sim_start_s=start, sim_end_s=self.env.now, host_s=host_s, device_s=device_s,
                            status="ok", detail=call.label)
        return value

    def _compute(self, rnd: int, cid: int, outcome: Outcome, tl: ClientTimeline) -> Generator:
        """Put the outcome's spans on the clock; returns False when the client went offline
        before they ended."""
        client = self.clients[cid]
        spans = () if isinstance(outcome, Failure) else getattr(outcome, "spans", ())
        for span in spans:
            self.recorder.host_interval(rnd, f"client-{cid}", span.label, span.t_end_unix, span.host_s)
            if cid in self.throttled:  # measured under the device's CPU quota: already device time
                host_s, device_s, factor, bound = span.host_s, span.host_s, 1.0, "throttled"
            else:
                host_s, device_s, factor, bound = self._dilate(client, span.host_s, span.workload, span.precision)
            if self.replay is not None:
                host_s, device_s = self.replay.lookup(rnd, cid, span.label, host_s, device_s)
                factor = device_s / host_s if host_s > 0 else float("nan")
            start = self.env.now
            if start + device_s > tl.offline_at_s:  # the device leaves mid-compute: the work is lost
                yield self.env.timeout(max(0.0, tl.offline_at_s - start))
                tl.host_s += host_s
                tl.device_s += self.env.now - start
                self.recorder.event(round=rnd, client=cid, kind="compute", payload_bytes=0, wire_bytes=0,
                                    sim_start_s=start, sim_end_s=self.env.now, host_s=host_s,
                                    device_s=self.env.now - start, status="failed", detail=f"{span.label}: offline")
                return False
            yield self.env.timeout(device_s)
            tl.host_s += host_s
            tl.device_s += device_s
            tl.factor, tl.bound = factor, bound
            self.recorder.event(round=rnd, client=cid, kind="compute", payload_bytes=0, wire_bytes=0,
                                sim_start_s=start, sim_end_s=self.env.now, host_s=host_s, device_s=device_s,
                                status="ok", detail=span.label)
        if isinstance(outcome, Failure):
            factor = 1.0 if cid in self.throttled else self._compute_bound_factor(client)
            device_s = outcome.host_s * factor
            if self.replay is not None:
                _, device_s = self.replay.lookup(rnd, cid, "failed", outcome.host_s, device_s)
            start = self.env.now
            yield self.env.timeout(device_s)
            tl.host_s += outcome.host_s
            tl.device_s += device_s
            self.recorder.event(round=rnd, client=cid, kind="compute", payload_bytes=0, wire_bytes=0,
                                sim_start_s=start, sim_end_s=self.env.now, host_s=outcome.host_s,
                                device_s=device_s, status="failed", detail=f"{outcome.cause}: {outcome.detail}")
        return True

    def _dilate(self, client: FleetClient, host_s: float, workload, precision: str) -> tuple[float, float, float, str]:
        d = dilate(host_s, workload=workload, host=self.calibration,
                   device_gflops=device_compute(client, use_accelerator=self.scenario.emulation.use_accelerator),
                   device_mem_bandwidth_gbps=client.device.mem_bandwidth_gbps, precision=precision)
        return d.host_s, d.device_s, d.factor, d.bound

    def _compute_bound_factor(self, client: FleetClient) -> float:
        """Host-to-device time factor when compute-bound (failed work, CPU quotas)."""
        gflops = device_compute(client, use_accelerator=self.scenario.emulation.use_accelerator)
        return host_peak_gflops(self.calibration, self.scenario.framework.precision) / gflops

    def _transfer_event(self, rnd: int, cid: int, payload: Payload, rec) -> None:
        self.recorder.event(round=rnd, client=cid, kind=payload.kind, payload_bytes=rec.payload_bytes,
                            wire_bytes=rec.wire_bytes, sim_start_s=rec.start_s, sim_end_s=rec.end_s,
                            host_s=0.0, device_s=0.0, status=rec.status, detail="")

    # -- rows ------------------------------------------------------------------------------------
    def _record_round(self, ctx: RoundContext, sim_start: float, metrics: dict, server_s: float,
                      host_round_s: float, host_fit_s: float, host_eval_s: float) -> None:
        arrived = [cid for cid, tl in ctx.timelines.items() if tl.arrived]
        for cid in sorted(ctx.timelines):
            self._record_client_round(ctx, cid)
        last = max(arrived, key=lambda c: (ctx.timelines[c].end_s, c)) if arrived else None
        tls = ctx.timelines.values()
        self.recorder.round(
            round=ctx.rnd, sim_start_s=sim_start, sim_end_s=self.env.now, sim_duration_s=self.env.now - sim_start,
            selected=" ".join(map(str, sorted(ctx.ins))), participants=len(arrived),
            failures=len(ctx.failures), discarded=len(ctx.discarded - set(ctx.failures)), straggler=last,
            wasted_compute_s=sum(ctx.timelines[c].device_s for c in ctx.timelines if c not in ctx.results),
            bytes_up=sum(t.bytes_up for t in tls), bytes_down=sum(t.bytes_down for t in tls),
            wire_bytes_up=sum(t.wire_up for t in tls), wire_bytes_down=sum(t.wire_down for t in tls),
            server_compute_s=server_s, host_round_s=host_round_s, host_fit_s=host_fit_s, host_eval_s=host_eval_s,
            **metrics,
        )

    def _record_client_round(self, ctx: RoundContext, cid: int) -> None:
        outcome = ctx.results.get(cid) or ctx.failures.get(cid)
        ok = isinstance(outcome, FitRes)
        late = cid in ctx.discarded and not ok and cid not in ctx.failures
        self.recorder.client_round(**self._client_row(
            ctx.rnd, cid, ctx.timelines[cid], outcome if ok else None,
            "ok" if ok else ("discarded" if late else failure_outcome(outcome.cause)),
            "" if ok else ("late" if late else outcome.cause),
        ))

    def _client_row(self, rnd: int, cid: int, tl: ClientTimeline, result: FitRes | None, outcome: str,
                    cause: str) -> dict[str, Any]:
        """One client_rounds.csv row; `result` is the update when the outcome is ok."""
        client = self.clients[cid]
        peak_mb = tl.peak_rss_bytes / 2**20
        return dict(
            round=rnd, client=cid, device=client.name, link=client.link.name, outcome=outcome, cause=cause,
            n_samples=result.n_samples if result else 0,
            train_loss=result.metrics.get("train_loss") if result else None,
            host_compute_s=tl.host_s, device_compute_s=tl.device_s, dilation_factor=tl.factor, bound=tl.bound,
            peak_rss_mb=peak_mb, memory_budget_mb=client.memory_budget_mb,
            over_memory_budget=bool(peak_mb > client.memory_budget_mb or outcome == "oom"),
            bytes_down=tl.bytes_down, bytes_up=tl.bytes_up, sim_start_s=tl.start_s, sim_end_s=tl.end_s,
            **client_round_energy(device=client.device.name, power_w=client.device.power_w,
                                  device_compute_s=tl.device_s, link=client.link.name, radio=client.link.radio,
                                  exchanges=tl.exchanges),
        )
