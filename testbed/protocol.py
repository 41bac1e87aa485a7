"""What frameworks, backends and the round loop exchange: plain dataclasses.

A framework describes what a client and the server do; it never drives a link, a process
or a container. Payloads hold real serialised bytes (their length is what the network
times); compute spans carry measured host seconds and the work they stood for (to place
them on the device's roofline); failures arrive as values.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from testbed.config.dictinit import dict_init
from testbed.config.wiretypes import wire_type

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario
    from testbed.ml.workload import Workload


@wire_type("Payload")
@dataclass(frozen=True)
class Payload:
    kind: str  # exchange kind, e.g. adapter_down / adapter_up
    data: bytes  # exactly what is serialised on the wire (before protocol headers)

    @property
    def payload_bytes(self) -> int:
        return len(self.data)


@wire_type("ComputeSpan")
@dataclass(frozen=True)
class ComputeSpan:
    label: str  # e.g. "train"
    host_s: float  # measured on this host, at the worker's thread count and pinning
    workload: Workload  # FLOPs and bytes the span stood for (roofline placement)
    precision: str = "fp32"  # what the host computed it in (fp32 | bf16 autocast): its host rate
    t_end_unix: float = field(default_factory=time.time)  # host wall clock when it ended (made right after the work)


class CarriesPayloads:
    """Finds a message's payload by its exchange kind (never by position)."""

    payloads: tuple[Payload, ...]

    def payload(self, kind: str) -> Payload:
        found = self.maybe_payload(kind)
        if found is None:
            raise KeyError(f"no {kind!r} payload; this message carries {[p.kind for p in self.payloads]}")
        return found

    def maybe_payload(self, kind: str) -> Payload | None:
        return next((p for p in self.payloads if p.kind == kind), None)


def client_round_seed(scenario_seed: int, rnd: int, client_id: int) -> int:
    """The seed a client trains with in round `rnd` (its batch order): one formula for every
    framework, so the same scenario and seed give every family the same batches."""
    return scenario_seed * 1_000_003 + rnd * 1009 + client_id


@wire_type("FitIns")
@dict_init  # made once per client-round: a fleet run makes millions
@dataclass(frozen=True)
class FitIns(CarriesPayloads):
    round: int
    payloads: tuple[Payload, ...]  # sent down to the client, in order
    seed: int  # the client's seed for this round (batch order)
    config: dict[str, Any] = field(default_factory=dict)  # small settings (not timed as payload)


@wire_type("FitRes")
@dict_init
@dataclass(frozen=True)
class FitRes(CarriesPayloads):
    client_id: int
    round: int
    payloads: tuple[Payload, ...]  # sent up to the server, in order
    n_samples: int  # local training examples (aggregation weight)
    metrics: dict[str, float]
    spans: tuple[ComputeSpan, ...]
    peak_rss_bytes: int = 0  # filled in by the backend that ran it
    host: str = ""  # the machine that computed it, where the backend says (a Ray node id)


@wire_type("StepRes")
@dataclass(frozen=True)
class StepRes(CarriesPayloads):
    """The result of one client call inside a round (a split step, a logit batch, ...)."""

    payloads: tuple[Payload, ...] = ()
    spans: tuple[ComputeSpan, ...] = ()
    peak_rss_bytes: int = 0
    host: str = ""  # the machine that computed it, where the backend says (a Ray node id)


@wire_type("Failure")
@dataclass(frozen=True)
class Failure:
    client_id: int
    round: int
    cause: str  # crashed | killed | oom | timeout | error | diverged (its loss or weights not finite)
    detail: str
    host_s: float = 0.0  # host seconds of work done before the failure
    peak_rss_bytes: int = 0
    host: str = ""  # the machine the call ran on, where the backend says (a Ray node id)


Outcome = FitRes | Failure


class ModelDiverged(RuntimeError):
    """The global model is no longer finite after a round's aggregation: the run cannot go on.
    Raised by a framework's aggregation; a client whose own training diverges fails its round
    instead (a Failure with cause ``diverged``)."""

    def __init__(self, rnd: int, tensor: str, model: str = "global model") -> None:
        super().__init__(f"round {rnd}: the {model} diverged: {tensor} is not finite")
        self.round = rnd
        self.tensor = tensor
        self.model = model

    def __reduce__(self) -> tuple:
        return type(self), (self.round, self.tensor, self.model)


@dataclass(frozen=True)
class Send:
    """Script action: a payload crosses the client's link (timed by the network)."""

    payload: Payload
    direction: Literal["up", "down"]


@dataclass(frozen=True)
class ClientCall:
    """Script action: real work in the client's worker, `method(*args)` of its Client; the
    script receives the method's result (its `spans` become device time on the clock)."""

    method: str
    args: tuple = ()


@dataclass(frozen=True)
class ServerCall:
    """Script action: real work on the server, queued on the server (a simpy Resource) in
    simulated arrival order; its measured time enters the clock."""

    fn: Callable[..., Any]
    args: tuple = ()
    label: str = "server"
    cost_s: float | None = None  # predicted host seconds (emulation.compute: predicted): fn is not timed


Action = Send | ClientCall | ServerCall
ClientScript = Generator[Action, Any, "FitRes"]


@wire_type("ClientSpec")
@dataclass(frozen=True)
class ClientSpec:
    """Everything a worker needs to build one client; picklable, no live objects."""

    client_id: int
    scenario: Scenario
    model_dir: str
    train_indices: tuple[int, ...]
    threads: int


@dataclass
class ServerContext:
    scenario: Scenario
    model_dir: str
    out_dir: Path
    extra: dict = field(default_factory=dict)
    # the clients' data-parallel group evaluates (Framework.client_evaluation): the server may
    # leave its model unloaded and start from a client's state (Framework.client_initial_state)
    clients_evaluate: bool = False


class Client(ABC):
    """The client side of a framework, built inside its worker (process or in-process)."""

    # whether its calls can run on a data-parallel group (testbed.ml.dataparallel): every rank
    # runs the call, splits its batches and sums gradients, and returns the same result
    data_parallel: ClassVar[bool] = False

    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec

    @abstractmethod
    def setup(self) -> None:
        """Load the model and the client's data (once per worker)."""

    def fit(self, ins: FitIns) -> FitRes:
        """One round of local work (the default script's single call)."""
        raise NotImplementedError(f"{type(self).__name__} has no fit(); its framework's script calls other methods")

    def checkpoint_state(self) -> bytes | None:
        """What this client carries from round to round (e.g. a KD student), as bytes; None:
        nothing (it starts every round from what the server sends; its random draws are
        seeded by the round's own seed)."""
        return None

    def restore_state(self, data: bytes) -> None:
        """Take back what checkpoint_state() returned."""
        raise NotImplementedError(f"{type(self).__name__} keeps no state to restore")


class Framework(ABC):
    """The server side of a framework; the round loop in testbed.sim.runner calls these hooks."""

    name: ClassVar[str]
    client_class: ClassVar[type[Client]]
    client_autocast: ClassVar[bool] = True  # clients train under framework.precision's autocast

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def setup(self) -> None:
        """Load server-side models and the evaluation data."""

    @abstractmethod
    def configure_fit(self, rnd: int, client_ids: list[int]) -> dict[int, FitIns]:
        """What each selected client is sent this round."""

    def client_script(self, rnd: int, cid: int, ins: FitIns) -> ClientScript:
        """One client's round as actions the runner times: by default download what
        configure_fit sent, run `fit` in the client, upload what it returns."""
        for payload in ins.payloads:
            yield Send(payload, "down")
        res = yield ClientCall("fit", (ins,))
        for payload in res.payloads:
            yield Send(payload, "up")
        return res

    @classmethod
    def phase_rounds(cls, scenario: Scenario) -> tuple[int, ...]:
        """The rounds from which a client-round's work changes shape (1 first): a predicted run
        (`emulation.compute: predicted`) measures one client-round of each."""
        return (1,)

    def prefetch(self, rnd: int, cid: int, ins: FitIns) -> ClientCall | None:
        """A call whose inputs are known at round start: the runner starts it on the host
        at once (clients in parallel) and the script's identical call takes its result."""
        return ClientCall("fit", (ins,))

    def aggregate_cost_s(self, rnd: int, updates: int) -> float | None:
        """Predicted host seconds of round `rnd`'s aggregation of `updates` updates; None (the
        default): the aggregation is timed as it runs."""
        return None

    @abstractmethod
    def aggregate_fit(self, rnd: int, results: list[FitRes], failures: list[Failure]) -> dict[str, float]:
        """Combine the results that arrived (in client-id order); return round metrics."""

    @abstractmethod
    def evaluate(self, rnd: int) -> dict[str, float]:
        """Held-out evaluation of the global model: the task's metrics (testbed.ml.tasks.evaluate_model:
        eval_loss and accuracy, or eval_loss, perplexity, rouge_l and exact_match), and where
        generations were made, their list under ``generations`` (kept out of the rounds table)."""

    def client_evaluation(self, rnd: int) -> tuple[str, tuple] | None:
        """(client method, args) that evaluates the global model of round `rnd` on a client's
        data-parallel group, each rank taking a share of the held-out set, with the same
        result as evaluate(); None where only the server can (the default)."""
        return None

    def client_initial_state(self) -> tuple[str, tuple] | None:
        """(client method, args) whose answer is the server's starting state, where setup()
        left its model unloaded because the clients evaluate (ctx.clients_evaluate): the
        clients build the same seeded state, so the server need not load a model only for
        that. None (the default): setup() made its own state."""
        return None

    def adopt_initial_state(self, answer: object | None) -> None:
        """Take a client's answer to client_initial_state(); None where no client answered:
        build the state on the server after all."""
        raise NotImplementedError(f"{type(self).__name__} asks no client for its initial state")

    def save(self, out_dir: Path) -> None:
        """Write the final global artefacts into the run directory."""

    def final_adapter(self) -> dict[str, Any] | None:
        """The global LoRA adapter over the whole base model (PEFT's state-dict keys), saved at
        the end as a PEFT folder; None where the framework has none."""
        return None

    # -- checkpoint and resume (testbed.sim.checkpoint) -------------------------------------
    def checkpoint(self) -> FrameworkState:
        """Everything the server needs to go on after the last completed round: global
        model state, optimizer states, anything carried from round to round."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed")

    def restore(self, state: FrameworkState, rnd: int) -> None:
        """Take back what checkpoint() returned at the end of round `rnd` (after setup())."""
        raise NotImplementedError(f"{type(self).__name__} cannot be restored")


@dataclass(frozen=True)
class FrameworkState:
    """A framework's checkpoint: tensors (safetensors-storable, by name) and JSON-able facts."""

    tensors: dict[str, Any]  # name -> torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
