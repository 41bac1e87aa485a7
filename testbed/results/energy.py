"""Energy per client-round: the device computing at its profile power, plus its radio moving
the round's bytes (docs/energy.md).

    compute_energy_j = power_w x device_compute_s
    radio_energy_j   = sum over ok exchanges of alpha_dir x wire Mbit / 1000
                       + base_mw x (time the client had an exchange in flight) / 1000
                       + tail_mw x (tail seconds after each burst of exchanges) / 1000
    energy_j         = compute_energy_j + radio_energy_j

The radio part is Huang et al.'s data-transfer power model P = alpha_u x t_u + alpha_d x t_d +
beta (t in Mbit/s), integrated over the exchanges as the simulator timed them: an exchange of
B bits lasting d seconds at rate B / d contributes (alpha x B / d + beta) x d = alpha x B +
beta x d. Overlapping exchanges pay beta once. After each burst (a maximal run of overlapping
exchanges) the radio stays in its tail state for tail_s, cut short by the next burst; the round's
last burst pays the whole tail. A part whose figure is unknown (a device without
`power_w`, a link without radio coefficients) is None, and so is the total; `energy_note` says
what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

from testbed.config.fleet import RadioPower

ENERGY_COLUMNS = ["energy_j", "compute_energy_j", "radio_energy_j", "energy_note"]


class Exchange(NamedTuple):
    """One of the client's transfers: its direction and its span in simulated seconds
    (immutable; a named tuple: a fleet run makes two per client-round)."""

    direction: str  # up | down
    wire_bytes: int
    start_s: float
    end_s: float
    ok: bool = True  # a failed transfer's bytes are not known to have crossed: base power only


def bursts(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of [start, end) spans as disjoint, sorted bursts."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def busy_s(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of [start, end) spans."""
    return sum(b - a for a, b in bursts(spans))


def tail_s(spans: Iterable[tuple[float, float]], tail_len_s: float) -> float:
    """Seconds the radio spends in its tail: after each burst, tail_len_s or the silence before
    the next burst if shorter; the last burst's tail in full."""
    merged = bursts(spans)
    gaps = [nxt[0] - cur[1] for cur, nxt in pairwise(merged)]
    return sum(min(gap, tail_len_s) for gap in gaps) + (tail_len_s if merged else 0.0)


def radio_energy_j(radio: RadioPower, exchanges: Sequence[Exchange]) -> float:
    """Joules the radio spends on these exchanges: the linear power model while they are in
    flight, and the tail power after each burst."""
    data_mj = sum((radio.up_mw_per_mbps if e.direction == "up" else radio.down_mw_per_mbps)
                  * e.wire_bytes * 8 / 1e6 for e in exchanges if e.ok)
    spans = [(e.start_s, e.end_s) for e in exchanges]
    base_mj = radio.base_mw * busy_s(spans)
    tail_mj = radio.tail_mw * tail_s(spans, radio.tail_s) if radio.tail_mw else 0.0
    return (data_mj + base_mj + tail_mj) / 1000.0


def energy_values(device: str, power_w: float | None, device_compute_s: float, link: str, radio: RadioPower | None,
                  exchanges: Sequence[Exchange]) -> tuple[float | None, float | None, float | None, str]:
    """The energy columns of one client_rounds.csv row, in ENERGY_COLUMNS' order (None where a figure
    is unknown)."""
    compute_j = None if power_w is None else power_w * device_compute_s
    radio_j = None if radio is None else radio_energy_j(radio, exchanges)
    total = compute_j + radio_j if compute_j is not None and radio_j is not None else None
    return total, compute_j, radio_j, _missing(device if power_w is None else None, link if radio is None else None)


@lru_cache(maxsize=1024)
def _missing(device: str | None, link: str | None) -> str:
    """The energy_note of a row: the device without power_w and the link without radio power, if any
    ("" where neither is missing)."""
    missing = [f"power_w unknown for {device}"] if device is not None else []
    if link is not None:
        missing.append(f"radio power unknown for link {link}")
    return "; ".join(missing)
