"""Seeded synthetic capacity traces: a Markov-modulated rate, as rates or as opportunities."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from network.trace_types import OpportunityTrace, RateTrace


def markov_rate_trace(
    *,
    rates_mbps: Sequence[float],
    duration_s: float,
    seed: int,
    step_s: float = 1.0,
    stay_prob: float = 0.9,
) -> RateTrace:
    """A Markov-modulated rate: each step keeps its state with `stay_prob`, else jumps.

    A jump goes to one of the other states, uniformly; the first state is uniform too.
    The same arguments and seed give the same trace.
    """
    if len(rates_mbps) < 1:
        raise ValueError('"rates_mbps" must hold at least one rate')
    if not (0 <= stay_prob <= 1):
        raise ValueError(f'"stay_prob" must be in [0, 1], got {stay_prob!r}')
    steps = round(duration_s / step_s)
    if steps < 1 or not math.isclose(steps * step_s, duration_s):
        raise ValueError(
            f'"duration_s" must be a whole number (>= 1) of "step_s", got {duration_s!r}'
        )
    rng = np.random.default_rng(seed)
    n = len(rates_mbps)
    state = int(rng.integers(n))
    states = [state]
    for _ in range(steps - 1):
        if n > 1 and rng.random() >= stay_prob:
            state = (state + 1 + int(rng.integers(n - 1))) % n
        states.append(state)
    rates = tuple(rates_mbps[s] for s in states)
    return RateTrace(rates, step_s=step_s, source=f"<markov seed {seed}>")


def synthetic_trace(
    *,
    rates_mbps: Sequence[float],
    duration_s: float,
    seed: int,
    step_s: float = 1.0,
    stay_prob: float = 0.9,
) -> OpportunityTrace:
    """A Markov-modulated rate as mahimahi opportunities (see `markov_rate_trace`)."""
    rate_trace = markov_rate_trace(
        rates_mbps=rates_mbps, duration_s=duration_s, seed=seed, step_s=step_s, stay_prob=stay_prob
    )
    return rate_trace.to_opportunities()
