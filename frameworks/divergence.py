"""Training that diverges: a loss or trainable weights that are no longer finite.

A client whose training diverges fails its round (a Failure with cause ``diverged``): it stops
at the step whose loss is not finite (before the optimizer steps on it), or after the round
when its trainable weights are not finite, and the run goes on without its update. A global
model that is not finite after aggregation raises testbed.protocol.ModelDiverged, which ends
the run. The cost: one finiteness test per step of a loss already read back as a number, and
one pass over the trainable (adapter) tensors per client-round and per aggregation.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from testbed.config.wiretypes import wire_type
from testbed.protocol import Failure, FitIns, FitRes, ModelDiverged

DIVERGED = "diverged"  # the Failure cause (client_rounds.csv: outcome failed, cause diverged)


class TrainingDiverged(RuntimeError):
    """A loss that is not finite, raised at the step that computed it."""

    def __init__(self, what: str, value: float, step: int) -> None:
        super().__init__(f"{what} is {value} at step {step}")
        self.what, self.value, self.step = what, value, step

    def __reduce__(self) -> tuple:
        return type(self), (self.what, self.value, self.step)


@wire_type("Diverged")
@dataclass(frozen=True)
class Diverged:
    """A server step's answer where the loss on a client's batch is not finite (Split-FedLLM):
    nothing was stepped, and that client's round ends. Registered for the wire: a resumed run's
    ledger keeps server answers (testbed.sim.ledger)."""

    detail: str


def finite_loss(loss: torch.Tensor | float, *, step: int, what: str = "training loss") -> float:
    """The loss as a number; TrainingDiverged where it is NaN or infinite."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise TrainingDiverged(what, value, step)
    return value


def nonfinite_tensor(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, else None."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def trainable(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's trainable tensors (its adapters), by name."""
    return ((name, p.detach()) for name, p in model.named_parameters() if p.requires_grad)


def finite_global(state: Mapping[str, torch.Tensor], rnd: int, model: str = "global adapter") -> dict:
    """`state` (a global model's tensors after round `rnd`'s aggregation) where every tensor is
    finite; ModelDiverged naming the first that is not."""
    name = nonfinite_tensor(state.items())
    if name is not None:
        raise ModelDiverged(rnd, name, model)
    return dict(state)


@contextmanager
def global_training(rnd: int, model, what: str) -> Iterator[None]:
    """Around the server's own training of a global model (KD-FedLLM's teacher): a loss that
    is not finite, or trainable weights that are not finite afterwards, raise ModelDiverged."""
    try:
        yield
    except TrainingDiverged as exc:
        raise ModelDiverged(rnd, f"its {exc.what} (step {exc.step})", what) from exc
    name = nonfinite_tensor(trainable(model))
    if name is not None:
        raise ModelDiverged(rnd, name, what)


def diverged_failure(client_id: int, rnd: int, detail: str, host_s: float = 0.0) -> Failure:
    return Failure(client_id, rnd, DIVERGED, detail, host_s=host_s)


def weights_diverged(model) -> str | None:
    """The detail of a client's failure where its trainable weights are not finite, else None."""
    name = nonfinite_tensor(trainable(model))
    return None if name is None else f"trainable tensor {name} is not finite after training"


def fails_on_divergence(fit: Callable[..., FitRes]) -> Callable[..., FitRes | Failure]:
    """A client's ``fit(ins)`` that answers a ``diverged`` Failure instead of its result where
    a loss was not finite (TrainingDiverged) or the client's trainable weights (``self.model``)
    are not finite at its end."""

    @functools.wraps(fit)
    def checked(self, ins: FitIns) -> FitRes | Failure:
        t0 = time.perf_counter()
        try:
            res = fit(self, ins)
        except TrainingDiverged as exc:
            return diverged_failure(self.spec.client_id, ins.round, str(exc), time.perf_counter() - t0)
        detail = weights_diverged(self.model)
        if detail is not None:
            return diverged_failure(self.spec.client_id, ins.round, detail, time.perf_counter() - t0)
        return res

    return checked
