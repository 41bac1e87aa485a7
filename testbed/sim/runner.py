"""Runs one scenario into one run directory: start, run, close.

Real work runs on the host (in parallel where the backend allows); its measured durations,
converted to device time, and its real payload sizes enter the simpy simulation, which
decides when each client's update arrives. The simulated clock is one simpy Environment for
the whole run. The actors on it live in their own modules: the round policy
(testbed.sim.rounds, testbed.sim.fedbuff), the client's round (testbed.sim.client), the
server (testbed.sim.server), selection (testbed.sim.selection), device time
(testbed.sim.devicetime) and the rows (testbed.sim.recording).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import simpy

from network import NO_OVERHEAD, TCP_IP, Network, OutagePolicy
from testbed.backends import Backend
from testbed.config.fleet import build_topology, expand_fleet
from testbed.config.scenario import Scenario, ScenarioError
from testbed.host.calibration import HostCalibration
from testbed.ml.memory import release_freed_memory
from testbed.ml.modeling import save_peft_folder
from testbed.ml.tasks import GENERATIONS_KEY
from testbed.protocol import Framework, ServerContext
from testbed.results.generations import append_generations
from testbed.results.recorder import RunRecorder
from testbed.sim import startup
from testbed.sim.client import ClientProcess
from testbed.sim.devicetime import DeviceTime, cpu_quotas
from testbed.sim.checkpoint import Checkpoint
from testbed.sim.fedbuff import FedBuffRounds
from testbed.sim.frameworks import framework_class
from testbed.sim.ledger import Ledger, LedgerBackend
from testbed.sim.policy import OnRound, RoundPolicy, SimParts
from testbed.sim.recording import Recording
from testbed.sim.replay import ComputeReplay
from testbed.sim.resume import Checkpoints
from testbed.sim.rounds import DeadlineRounds, SyncRounds
from testbed.sim.selection import Selection, link_outages, schedules
from testbed.sim.server import Server

ROUND_POLICIES: dict[str, type[RoundPolicy]] = {p.kind: p for p in (SyncRounds, DeadlineRounds, FedBuffRounds)}


class Runner:
    """Runs one scenario into one run directory."""

    def __init__(self, scenario: Scenario, out_dir: Path, *, model_dir: str,
                 replay: ComputeReplay | None = None, progress: Callable[[str], None] | None = None,
                 resume: Checkpoint | None = None) -> None:
        self.scenario = scenario
        self.resume = resume  # a checkpoint of this run to go on from (testbed.sim.resume)
        self.out_dir = Path(out_dir)
        self.model_dir = model_dir
        self.replay = replay
        self.progress = progress or (lambda _msg: None)
        self.recorder = RunRecorder(self.out_dir)
        self.recorder.muted = resume is not None  # its tables are the checkpoint's until the replay reaches it
        self.clients = expand_fleet(scenario)
        self.env = simpy.Environment(initial_time=0.0)  # a float from the start: round 1 begins at 0.0 s, not 0
        overhead = TCP_IP if scenario.emulation.protocol_overhead else NO_OVERHEAD
        policy = OutagePolicy(scenario.network.on_outage, scenario.network.outage_timeout_s)
        self.net = Network(self.env, overhead=overhead, outage_policy=policy, keep_records=False)  # events.csv has them
        plans = schedules(scenario.availability, len(self.clients), scenario.seed)
        self.selection = Selection(scenario, self.env, self.clients, plans)
        self.topology = build_topology(self.net, scenario, self.clients, link_outages(scenario, self.clients, plans))
        self.policy_class = ROUND_POLICIES[scenario.policy.kind]
        self.framework: Framework | None = None
        self.backend: Backend | None = None
        self._calibration: HostCalibration | None = None
        self.bf16_step_speedup: float | None = None  # measured at start() where bf16 is used
        self.layout = "per_client"  # emulation.workers as resolved at start()
        self.eval_on_group = False  # the data-parallel group evaluates (set at start())
        self.throttled: dict[int, float] = {}  # client -> CPU quota (cores) under `time: throttle`
        self.policy: RoundPolicy | None = None
        self.predicted = scenario.emulation.compute == "predicted"
        if self.predicted and replay is not None:
            raise ScenarioError("--replay-compute replays measured compute: emulation.compute: predicted takes its "
                                "spans from its cost table (set emulation.compute=measured to replay a run)")
        self.ledger = resume.ledger if resume is not None else Ledger(kept=not self.predicted)
        self.checkpoints: Checkpoints | None = None

    # -- start, run, close -----------------------------------------------------------------
    def start(self) -> None:
        """Choose the layout and precision, load the server beside the client workers (or, under
        predicted compute, take the cost table), calibrate the host, and put the actors on the
        clock."""
        cls = framework_class(self.scenario.framework.name)
        if self.resume is not None:  # the precision the checkpointed rounds ran in
            self._set_precision(self.resume.precision)
        if self.predicted:
            self._start_predicted(cls)
        else:
            self._start_measured(cls)
        self.checkpoints = Checkpoints(
            self.out_dir, framework=self.framework, backend=self.backend, recorder=self.recorder, ledger=self.ledger,
            facts=self._clock_facts, clock=lambda: self.env.now, rounds=self.scenario.framework.rounds,
            resume=self.resume, progress=self.progress)
        self.checkpoints.restore_clients()
        self.policy = self.policy_class(self._parts())

    def _set_precision(self, precision: str) -> None:
        fw = self.scenario.framework
        self.scenario = self.scenario.model_copy(update={"framework": fw.model_copy(update={"precision": precision})})

    def _start_predicted(self, cls: type[Framework]) -> None:
        """No workers, no models: the cost table (measured once on this host) answers."""
        from testbed.sim.predicted import PredictedBackend, PredictedFramework, cost_table

        table = cost_table(self.scenario, cls, self.model_dir, self.out_dir, resume=self.resume is not None,
                           progress=self.progress)
        self._set_precision(table.precision)
        self.layout = "predicted"
        self.framework = PredictedFramework(ServerContext(self.scenario, self.model_dir, self.out_dir), table)
        self.backend = PredictedBackend(table, self.clients, enforce_memory=self.scenario.emulation.enforce_memory)
        self._calibration = self.resume.calibration if self.resume is not None else table.calibration
        self.bf16_step_speedup = self._calibration.bf16_step_speedup
        self.progress(f"predicted compute: {len(self.clients):,} clients from the cost table, no client workers")

    def _start_measured(self, cls: type[Framework]) -> None:
        """The clients' workers and the server's model, loaded side by side; the host calibrated."""
        from testbed.ml.modeling import server_device

        self.layout = startup.worker_layout(self.scenario, cls.client_class)
        self.scenario, self.bf16_step_speedup = startup.choose_precision(
            self.scenario, cls, layout=self.layout, model_dir=self.model_dir, progress=self.progress)
        self.eval_on_group = (self.layout == "data_parallel" and self.policy_class.group_may_evaluate
                              and server_device(self.scenario.server.device).type == "cpu")
        self.framework = cls(ServerContext(self.scenario, self.model_dir, self.out_dir,
                                           clients_evaluate=self.eval_on_group))
        specs = startup.client_specs(self.scenario, self.clients, self.model_dir)
        self.backend = startup.build_backend(self.scenario, self.layout, cls.client_class, specs, self.clients,
                                             progress=self.progress)
        server = "the clients evaluate, the server loads no model" if self.eval_on_group else "loading the server model"
        self.progress(f"{server}; starting {len(self.clients)} client workers ({self.scenario.emulation.backend})")
        with ThreadPoolExecutor(1, thread_name_prefix="launch") as pool:  # workers load beside the server
            launched = pool.submit(self.backend.launch)
            self.framework.setup()
            launched.result()
        self.backend.start()  # calibrates, now that nothing else runs
        startup.adopt_client_state(self.framework, self.backend)
        if self.resume is not None:  # the clock goes on converting as it did before the checkpoint
            self._calibration, self.bf16_step_speedup = self.resume.calibration, self.resume.bf16_step_speedup
        else:
            self._calibration = replace(self.backend.calibration, bf16_step_speedup=self.bf16_step_speedup)
        if self.scenario.emulation.time == "throttle":
            quotas = self.resume.throttled if self.resume is not None else \
                cpu_quotas(self.scenario, self.clients, self.calibration)
            self.throttled = self.backend.set_cpu_quotas(quotas)
            startup.warn_unthrottled(self.clients, self.throttled)

    def _clock_facts(self) -> dict[str, Any]:
        """What the clock converted measured work with, for the checkpoint."""
        return {"calibration": self.calibration, "bf16_step_speedup": self.bf16_step_speedup,
                "throttled": dict(self.throttled), "precision": self.scenario.framework.precision}

    def _parts(self) -> SimParts:
        device_time = DeviceTime(self.scenario, self.clients, self.calibration, throttled=self.throttled,
                                 replay=self.replay)
        server = Server(self.env, self.recorder, device_time, self.ledger)
        # a ledger that keeps nothing (predicted compute) has no view to put between the clock and the backend
        backend = LedgerBackend(self.backend, self.ledger) if self.ledger.kept else self.backend
        clients = ClientProcess(self.env, self.net, self.topology, self.selection, self.framework, backend,
                                self.recorder, device_time, server)

        def progress(message: str) -> None:  # quiet while a resumed run replays its way to the checkpoint
            if not self.ledger.replaying:
                self.progress(message)

        return SimParts(self.scenario, self.env, self.framework, self.selection, clients, server,
                        Recording(self.recorder, self.clients, self.env), self.recorder, self.evaluate, progress,
                        self.ledger, self.checkpoints)

    def run(self, on_round: OnRound | None = None) -> list[dict[str, Any]]:
        if self.policy is None:
            raise RuntimeError("runner not started")
        if self.resume is not None:
            self.progress(f"replaying rounds 1-{self.resume.round} from the checkpoint's ledger")
        elif self.scenario.eval.before_training:
            self.policy.parts.recording.round0(*self.evaluate(0))
            if on_round:
                on_round(self.recorder.rounds[-1])

        def live_round(row: dict[str, Any]) -> None:  # rounds replayed on resume were reported before
            if self.predicted:  # the round's garbage collected once, what it leaves never walked again
                gc.collect(0)
                gc.freeze()
            if on_round is not None and not self.ledger.replaying:
                on_round(row)

        with _collector_per_round(self.predicted):
            self.policy.run(live_round)
        self.recorder.finish()
        self.framework.save(self.out_dir)
        adapter = self.framework.final_adapter()
        if adapter is not None:  # the standard form: PeftModel.from_pretrained(base, out_dir / "adapter")
            save_peft_folder(self.out_dir / "adapter", self.scenario.framework.lora, adapter, self.model_dir)
        return self.recorder.rounds

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    @property
    def calibration(self) -> HostCalibration:
        if self._calibration is None:
            raise RuntimeError("runner not started")
        return self._calibration

    def evaluate(self, rnd: int) -> tuple[dict, float]:
        """The framework's evaluation of round `rnd`'s model, and its host seconds: on the
        data-parallel group where there is one and the server computes on the CPU (its ranks
        share the held-out set; the server's own threads would run ops too small to split),
        else on the server."""
        if self.ledger.replaying:  # its rows come from the checkpoint
            return {}, 0.0
        t0 = time.perf_counter()
        call = self.framework.client_evaluation(rnd) if self.eval_on_group else None
        metrics = self.backend.submit(min(self.backend.specs), rnd, *call).result() if call else None
        on_server = not isinstance(metrics, dict)
        if on_server:  # no group, or its evaluation failed: the server evaluates
            metrics = self.framework.evaluate(rnd)
        host_s = time.perf_counter() - t0
        metrics = dict(metrics)
        append_generations(self.out_dir, rnd, metrics.pop(GENERATIONS_KEY, None) or [])
        self.recorder.host_interval(rnd, "server", "eval", time.time(), host_s)
        if on_server and not self.predicted:
            release_freed_memory()  # the server holds its model while clients train, not evaluation's batches
        return metrics, host_s


@contextlib.contextmanager
def _collector_per_round(predicted: bool) -> Iterator[None]:
    """A predicted fleet run with the cyclic garbage collector off during its rounds: a round
    allocates a million objects (events, rows, transfers), and the collector's generations
    walked them again and again (a fifth of the run's time). After each round its young objects
    are collected once (`gc.collect(0)`, the cycles a round leaves) and frozen (`live_round`)."""
    was_enabled = gc.isenabled()
    if predicted:
        gc.disable()
    try:
        yield
    finally:
        if predicted and was_enabled:
            gc.enable()
