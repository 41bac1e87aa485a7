"""How the server combines what arrives: FedAvg over adapter states, FedBuff's staleness-weighted
step, and the mean of the clients' reported metrics. Shared by every framework family."""

from __future__ import annotations

from testbed.ml.modeling import AdapterState


def fedavg(states: list[AdapterState], weights: list[float]) -> AdapterState:
    """Weighted average of adapter states (same keys), weights normalised to sum to 1."""
    if not states:
        raise ValueError("fedavg needs at least one state")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"fedavg weights must sum to > 0, got {weights}")
    return {
        key: sum((w / total) * s[key] for s, w in zip(states, weights, strict=True))
        for key in states[0]
    }


def staleness_weight(n_samples: int, staleness: int, exponent: float) -> float:
    """FedBuff's polynomial staleness discount of an update: n_samples x (1 + staleness)^-exponent."""
    return n_samples * (1.0 + staleness) ** -exponent


def buffered_step(global_state: AdapterState, updates: list[AdapterState], starts: list[AdapterState],
                  weights: list[float]) -> AdapterState:
    """FedBuff's server step (server learning rate 1): global + sum_i w_i (update_i - start_i) / sum_i w_i,
    where start_i is the global state client i trained from, so a stale update is a delta from its
    own start rather than from the current global."""
    if not updates:
        raise ValueError("buffered_step needs at least one update")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"buffered_step weights must sum to > 0, got {weights}")
    return {
        key: value + sum((w / total) * (u[key] - s[key]) for u, s, w in zip(updates, starts, weights, strict=True))
        for key, value in global_state.items()
    }


def mean_metrics(results, keys: tuple[str, ...]) -> dict[str, float]:
    """The mean over `results` (FitRes) of each of `keys` that some client reported."""
    out = {}
    for key in keys:
        values = [r.metrics[key] for r in results if key in r.metrics]
        if values:
            out[key] = sum(values) / len(values)
    return out
