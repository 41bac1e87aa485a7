"""The cost table of `emulation.compute: predicted`: what one client-round of the scenario's
framework does and costs, measured once on this host (testbed.sim.probe) and replayed for every
client of a fleet without training anything.

A round's table is the client's script as the probe saw it, step by step: each payload sent
(its kind, direction and real serialised size), each client call (its measured spans: host
seconds and the FLOPs and bytes they stood for, and the call's peak memory) and each server
call (its measured host seconds), plus what the aggregation costs (fixed + per update). The
clock converts these spans exactly as it converts measured ones (testbed.sim.devicetime).

Tables are cached as JSON under the asset cache, keyed by everything that changes the cost:
CPU model, threads per client, concurrency, torch version, model, the framework's settings,
the task and data shapes, and the precision. Nothing in a cache file is evaluated: it is
parsed as JSON and every field checked (CostTableError names the file and field).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.config.scenario import Scenario
from testbed.host.calibration import HostCalibration
from testbed.ml.workload import Workload

FORMAT = "testbed-costs/2"


class CostTableError(ValueError):
    """A cost table file that cannot be used."""


@dataclass(frozen=True)
class SendCost:
    """A payload crossing the client's link."""

    direction: str  # up | down
    kind: str  # exchange kind, e.g. adapter_up
    payload_bytes: int


@dataclass(frozen=True)
class SpanCost:
    """One measured span of a client call."""

    label: str
    host_s: float
    flops: float
    bytes_moved: float
    precision: str

    @property
    def workload(self) -> Workload:
        return Workload(self.flops, self.bytes_moved)


@dataclass(frozen=True)
class CallCost:
    """A client call: its spans (possibly none: set-up calls) and its peak memory."""

    method: str
    spans: tuple[SpanCost, ...]
    peak_rss_bytes: int


@dataclass(frozen=True)
class ServerCost:
    """A server call made for the client (split's backbone step, KD's ingest)."""

    label: str
    host_s: float


Step = SendCost | CallCost | ServerCost


@dataclass(frozen=True)
class RoundCost:
    """One probed round: the client's steps, and the aggregation's host seconds as
    `aggregate_fixed_s + aggregate_per_update_s x updates`."""

    round: int
    steps: tuple[Step, ...]
    aggregate_fixed_s: float
    aggregate_per_update_s: float
    metrics: tuple[str, ...] = ()  # the keys its aggregation reported (the rounds table's columns)

    def aggregate_s(self, updates: int) -> float:
        return self.aggregate_fixed_s + self.aggregate_per_update_s * updates


@dataclass(frozen=True)
class CostTable:
    key: dict[str, Any]  # what the costs depend on (cache_key)
    calibration: HostCalibration  # the host's speed, measured beside the probe at its threads and concurrency
    precision: str  # framework.precision as probed (auto resolved): fp32 | bf16
    rounds: tuple[RoundCost, ...]  # by round, ascending; round r uses the last probed round <= r
    probe_clients: int  # clients probed at once (the run's concurrency)
    probe_host_s: float  # host seconds the probe took

    def for_round(self, rnd: int) -> RoundCost:
        chosen = self.rounds[0]
        for cost in self.rounds:
            if cost.round <= rnd:
                chosen = cost
        return chosen

    def bytes_by_kind(self, rnd: int) -> dict[str, int]:
        """Payload bytes of one client-round of round `rnd`, per exchange kind."""
        out: dict[str, int] = {}
        for step in self.for_round(rnd).steps:
            if isinstance(step, SendCost):
                out[step.kind] = out.get(step.kind, 0) + step.payload_bytes
        return out

    # -- JSON --------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "key": self.key, "calibration": self.calibration.to_dict(), "precision": self.precision,
            "probe_clients": self.probe_clients, "probe_host_s": self.probe_host_s,
            "rounds": [{"round": r.round, "aggregate_fixed_s": r.aggregate_fixed_s,
                        "aggregate_per_update_s": r.aggregate_per_update_s, "metrics": list(r.metrics),
                        "steps": [{"step": type(s).__name__, **asdict(s)} for s in r.steps]} for r in self.rounds],
        }, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str) -> CostTable:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CostTableError(f"{source}: not JSON ({exc})") from None
        reader = _Reader(source)
        doc = reader.mapping(doc, "")
        if doc.get("format") != FORMAT:
            raise CostTableError(f"{source}: format: expected {FORMAT!r}, got {doc.get('format')!r}")
        try:
            calibration = HostCalibration.from_dict(reader.mapping(doc.get("calibration"), "calibration"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CostTableError(f"{source}: calibration: {exc}") from None
        rounds = tuple(reader.round(r, f"rounds.{i}") for i, r in enumerate(reader.items(doc.get("rounds"), "rounds")))
        if not rounds or [r.round for r in rounds] != sorted({r.round for r in rounds}):
            raise CostTableError(f"{source}: rounds: expected at least one round, in ascending order")
        return cls(reader.mapping(doc.get("key"), "key"), calibration,
                   reader.text(doc.get("precision"), "precision", ("fp32", "bf16")), rounds,
                   reader.count(doc.get("probe_clients"), "probe_clients", minimum=1),
                   reader.seconds(doc.get("probe_host_s"), "probe_host_s"))


class _Reader:
    """Checks each field of a cost table document, naming it when it is wrong."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, expected: str, value: Any) -> CostTableError:
        return CostTableError(f"{self.source}: {field or 'document'}: expected {expected}, got {value!r}"[:400])

    def mapping(self, value: Any, field: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, "an object", value)
        return value

    def items(self, value: Any, field: str) -> list:
        if not isinstance(value, list):
            raise self.fail(field, "a list", value)
        return value

    def seconds(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise self.fail(field, "a finite number >= 0", value)
        return float(value)

    def positive(self, value: Any, field: str) -> float:
        if self.seconds(value, field) <= 0:
            raise self.fail(field, "a number > 0", value)
        return float(value)

    def count(self, value: Any, field: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(field, f"an integer >= {minimum}", value)
        return value

    def text(self, value: Any, field: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or (choices is not None and value not in choices):
            raise self.fail(field, f"one of {list(choices)}" if choices else "a string", value)
        return value

    def round(self, value: Any, field: str) -> RoundCost:
        doc = self.mapping(value, field)
        steps = tuple(self.step(s, f"{field}.steps.{i}") for i, s in enumerate(self.items(doc.get("steps"),
                                                                                            f"{field}.steps")))
        return RoundCost(self.count(doc.get("round"), f"{field}.round", minimum=1), steps,
                         self.seconds(doc.get("aggregate_fixed_s"), f"{field}.aggregate_fixed_s"),
                         self.seconds(doc.get("aggregate_per_update_s"), f"{field}.aggregate_per_update_s"),
                         tuple(self.text(m, f"{field}.metrics.{i}") for i, m in
                               enumerate(self.items(doc.get("metrics"), f"{field}.metrics"))))

    def step(self, value: Any, field: str) -> Step:
        doc = self.mapping(value, field)
        kind = self.text(doc.get("step"), f"{field}.step", ("SendCost", "CallCost", "ServerCost"))
        if kind == "SendCost":
            return SendCost(self.text(doc.get("direction"), f"{field}.direction", ("up", "down")),
                            self.text(doc.get("kind"), f"{field}.kind"),
                            self.count(doc.get("payload_bytes"), f"{field}.payload_bytes"))
        if kind == "ServerCost":
            return ServerCost(self.text(doc.get("label"), f"{field}.label"),
                              self.seconds(doc.get("host_s"), f"{field}.host_s"))
        spans = tuple(SpanCost(self.text(s.get("label"), f"{field}.spans.{i}.label"),
                               self.seconds(s.get("host_s"), f"{field}.spans.{i}.host_s"),
                               self.positive(s.get("flops"), f"{field}.spans.{i}.flops"),
                               self.positive(s.get("bytes_moved"), f"{field}.spans.{i}.bytes_moved"),
                               self.text(s.get("precision"), f"{field}.spans.{i}.precision", ("fp32", "bf16")))
                      for i, s in enumerate(self.mapping(x, f"{field}.spans.{j}") for j, x in
                                            enumerate(self.items(doc.get("spans"), f"{field}.spans"))))
        return CallCost(self.text(doc.get("method"), f"{field}.method"), spans,
                        self.count(doc.get("peak_rss_bytes"), f"{field}.peak_rss_bytes"))


# -- the cache -------------------------------------------------------------------------------
def cache_key(scenario: Scenario, *, cpu_model: str, threads: int, concurrency: int, workers: str,
              torch_version: str) -> dict:
    """Everything a client-round's cost depends on: the host, its worker layout, the model, the
    framework's settings (not how many rounds or clients), the task and data shapes, the precision."""
    fw = scenario.framework.model_dump(mode="json", exclude={"rounds", "clients_per_round"})
    return {"cpu_model": cpu_model, "threads": threads, "concurrency": concurrency, "workers": workers,
            "torch": torch_version,
            "model": scenario.model, "framework": fw, "task": scenario.task.model_dump(mode="json"),
            "dataset": scenario.dataset.model_dump(mode="json")}


def cache_path(folder: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return folder / "costs" / f"{digest}.json"


def read_cached(path: Path, key: dict) -> CostTable | None:
    """The cached table at `path` when it was made for `key`; None where there is none."""
    if not path.is_file():
        return None
    table = CostTable.from_json(path.read_text(errors="replace"), str(path))
    return table if table.key == json.loads(json.dumps(key)) else None
