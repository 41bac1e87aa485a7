"""`emulation.compute: predicted`: the fleet's work replayed from a cost table, nothing trained.

No client worker, cgroup or model is started for the run. Every client-round follows the
probed script of its round (testbed.sim.costs): the same payload kinds and real sizes cross
its link, the same spans (host seconds and their FLOPs and bytes) are converted to its device's
time by the clock's own conversion (testbed.sim.devicetime), the same server calls queue on
the server for their measured seconds, and the aggregation costs its fixed plus per-update
seconds. Availability, dropouts, deadlines, over-selection, FedBuff and fault injection act on
it as on measured work. Learning metrics are not predicted: they stay empty (NaN).

Where `emulation.enforce_memory` holds, a call whose probed peak memory is over the client's
budget fails as `oom` (the probe's peak is its real process's, as the measured mode's cgroup
would see it).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
import threading
from concurrent.futures import Future
from concurrent.futures._base import FINISHED
from pathlib import Path
from typing import Any

from testbed.backends import Backend
from testbed.config.fleet import FleetClient
from testbed.config.scenario import Scenario, ScenarioError
from testbed.ml.tasks import evaluation_metric_names
from testbed.protocol import (
    Client,
    ClientCall,
    ComputeSpan,
    Failure,
    FitIns,
    FitRes,
    Framework,
    FrameworkState,
    Payload,
    Send,
    ServerCall,
    ServerContext,
    StepRes,
    client_round_seed,
)
from testbed.sim.costs import CallCost, CostTable, CostTableError, SendCost, ServerCost, cache_key, cache_path, read_cached

COSTS_FILE = "costs.json"  # the run folder's copy of the table it ran with


def _nothing() -> None:
    return None


class PredictedFramework(Framework):
    """The scenario's framework as its cost table describes it: scripts without work."""

    name = "predicted"
    client_class = Client  # carries nothing from round to round

    def __init__(self, ctx: ServerContext, table: CostTable) -> None:
        super().__init__(ctx)
        self.table = table
        self._made: dict[int, tuple[Send | ServerCall | ClientCall, ...]] = {}  # probed round -> its actions
        self._latest: tuple[int, tuple[Send | ServerCall | ClientCall, ...]] = (-1, ())  # (round, its actions)

    def setup(self) -> None:
        """Nothing to load."""

    def configure_fit(self, rnd: int, client_ids: list[int]) -> dict[int, FitIns]:
        seed = self.ctx.scenario.seed
        return {cid: FitIns(round=rnd, payloads=(), seed=client_round_seed(seed, rnd, cid)) for cid in client_ids}

    def prefetch(self, rnd: int, cid: int, ins: FitIns) -> ClientCall | None:
        return None  # nothing runs on the host

    def client_script(self, rnd: int, cid: int, ins: FitIns):
        for action in self._actions(rnd):  # each reply is the clock's (a link record, a result): unused
            yield action
        return FitRes(cid, rnd, (), n_samples=None, metrics={}, spans=())

    def _actions(self, rnd: int) -> tuple[Send | ServerCall | ClientCall, ...]:
        """Every client's script of round `rnd`: the same immutable actions, made once per probed round
        (a payload is zeros of the probed size: only its length crosses the simulated network)."""
        if self._latest[0] == rnd:  # every client of a round asks in turn
            return self._latest[1]
        cost = self.table.for_round(rnd)
        actions = self._made.get(cost.round)
        if actions is None:
            actions = self._made[cost.round] = tuple(
                Send(Payload(step.kind, bytes(step.payload_bytes)), step.direction) if isinstance(step, SendCost)
                else ServerCall(_nothing, (), label=step.label, cost_s=step.host_s) if isinstance(step, ServerCost)
                else ClientCall(step.method, (cost.round, index))
                for index, step in enumerate(cost.steps))
        self._latest = (rnd, actions)
        return actions

    def aggregate_cost_s(self, rnd: int, updates: int) -> float:
        return self.table.for_round(rnd).aggregate_s(updates)

    def aggregate_fit(self, rnd: int, results: list[FitRes], failures: list[Failure]) -> dict[str, float]:
        """The metrics the real aggregation reports, empty: nothing was trained."""
        return dict.fromkeys(self.table.for_round(rnd).metrics, math.nan) if results else {}

    def aggregate_buffered(self, rnd: int, results: list[FitRes], starts: list[FitIns],
                           staleness: list[int]) -> dict[str, float]:
        return self.aggregate_fit(rnd, results, [])

    def evaluate(self, rnd: int) -> dict[str, float]:
        """The task's metrics, empty: learning is not predicted."""
        return dict.fromkeys(evaluation_metric_names(self.ctx.scenario), math.nan)

    def checkpoint(self) -> FrameworkState:
        return FrameworkState({}, {"compute": "predicted"})

    def restore(self, state: FrameworkState, rnd: int) -> None:
        """Nothing to take back: the table is the run folder's costs.json."""


class PredictedBackend(Backend):
    """Answers each client call with its probed spans (StepRes), at once; nothing runs."""

    def __init__(self, table: CostTable, clients: list[FleetClient], *, enforce_memory: bool) -> None:
        super().__init__(Client, [])
        self.table = table
        self.budget_bytes = {c.client_id: c.memory_budget_mb * 2**20 for c in clients}
        self.enforce_memory = enforce_memory
        self._calibration = table.calibration
        self._answers: dict[tuple[int, int], tuple[CallCost, Future]] = {}  # (probed round, step) -> it, its answer
        self._ooms: dict[tuple[int, int, int], tuple[str, float]] = {}  # (round, step, budget) -> _oom_detail

    def start(self) -> None:
        """Nothing to start."""

    def submit(self, cid: int, rnd: int, method: str, args: tuple = (), *, kill: bool = False) -> Future:
        """The call's probed answer: one resolved future shared by every client, or a failure."""
        phase, index = args
        held = self._answers.get(args)
        if held is None:
            step = self.table.for_round(phase).steps[index]
            assert isinstance(step, CallCost)
            spans = tuple(ComputeSpan(s.label, s.host_s, s.workload, s.precision, t_end_unix=0.0) for s in step.spans)
            held = self._answers[args] = (step, _Resolved(StepRes(spans=spans, peak_rss_bytes=step.peak_rss_bytes)))
        step, answer = held
        if kill:
            return _Resolved(Failure(cid, rnd, "killed", "fault injection: killed once the call started"))
        if self.enforce_memory and step.peak_rss_bytes > self.budget_bytes[cid]:
            detail, host_s = self._oom_detail(args, step, self.budget_bytes[cid])
            return _Resolved(Failure(cid, rnd, "oom", detail, host_s=host_s, peak_rss_bytes=step.peak_rss_bytes))
        return answer

    def _oom_detail(self, args: tuple[int, int], step: CallCost, budget_bytes: int) -> tuple[str, float]:
        """(detail, host seconds) of a probed call's oom failure under a budget, made once per
        call and budget (a fleet's device class fails alike, thousands a round)."""
        key = (*args, budget_bytes)
        made = self._ooms.get(key)
        if made is None:
            made = self._ooms[key] = (
                f"predicted: {step.method} peaks at {step.peak_rss_bytes / 2**20:.0f} MB, over the "
                f"{budget_bytes / 2**20:.0f} MB budget", sum(s.host_s for s in step.spans))
        return made

    def facts(self) -> dict[str, Any]:
        return {"compute": "predicted", "probe_clients": self.table.probe_clients,
                "probe_host_s": round(self.table.probe_host_s, 3),
                "probed_rounds": [r.round for r in self.table.rounds]}


class _Resolved(Future):
    """A future made with its result, which never changes: read without taking a lock, and made
    without one (a fleet round makes thousands). It never waits, so its instances share one
    condition (add_done_callback, done(), as_completed take it briefly)."""

    _condition = threading.Condition()
    _state = FINISHED
    _exception = None
    _done_callbacks: tuple = ()  # a finished future calls a new callback at once, keeping none

    def __init__(self, answer: StepRes | Failure) -> None:  # no Future.__init__: no lock of its own
        self._result = answer
        self._waiters: list = []  # concurrent.futures.wait/as_completed add and remove theirs

    def result(self, timeout: float | None = None) -> StepRes | Failure:
        return self._result


def cost_table(scenario: Scenario, framework_cls: type[Framework], model_dir: str, out_dir: Path, *,
               resume: bool, progress: Callable[[str], None]) -> CostTable:
    """The run's cost table: the run folder's own when resuming, else the host's cached one
    for this scenario's key, else measured now (testbed.sim.probe) and cached. Written to the
    run folder as costs.json."""
    import torch
    from filelock import FileLock

    from testbed.host.cpu import cpu_model
    from testbed.sim.probe import measure, probe_concurrency
    from testbed.sim.startup import worker_layout

    own = Path(out_dir) / COSTS_FILE
    try:
        if resume and own.is_file():
            return CostTable.from_json(own.read_text(errors="replace"), str(own))
        key = cache_key(scenario, cpu_model=cpu_model(), threads=scenario.emulation.threads_per_client,
                        concurrency=probe_concurrency(scenario), torch_version=torch.__version__,
                        workers=worker_layout(scenario, framework_cls.client_class))
        path = cache_path(costs_dir(), key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            try:
                table = read_cached(path, key)
            except CostTableError as exc:  # a cache, not an input: measured again
                progress(f"emulation.compute: predicted: {exc}: measuring it again")
                table = None
            if table is None:
                progress(f"emulation.compute: predicted: probing {scenario.framework.name} on this host "
                         "(once per host, model and shapes)")
                table = measure(scenario, framework_cls, model_dir, progress)
                table = CostTable(json.loads(json.dumps(key)), table.calibration, table.precision, table.rounds,
                                  table.probe_clients, table.probe_host_s)
                _write_atomic(path, table.to_json())
            else:
                progress(f"emulation.compute: predicted: cost table {path} (probed in {table.probe_host_s:.0f} s)")
    except CostTableError as exc:
        raise ScenarioError(f"emulation.compute: predicted: {exc}; delete the file to measure it again") from None
    _write_atomic(own, table.to_json())
    return table


def costs_dir() -> Path:
    """Where cost tables are cached: the asset cache (testbed.ml.assets.cache_dir)."""
    from testbed.ml.assets import cache_dir

    return cache_dir()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
