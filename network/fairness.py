"""Max-min fair rates by progressive filling (water-filling)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

Link = TypeVar("Link", bound=Hashable)


def max_min_rates(paths: Sequence[Sequence[Link]], capacity: Mapping[Link, float]) -> list[float]:
    """Max-min fair rate of each flow; flow i crosses the links in `paths[i]`.

    Repeatedly the tightest link (capacity left / unfrozen flows crossing it) freezes
    its flows at that share. Ties go to the link that comes first in `capacity`.
    Rates are in the unit of `capacity`.
    """
    if any(len(path) == 0 for path in paths):
        raise ValueError('"paths" must each cross at least one link')
    rates = [0.0] * len(paths)
    left = dict(capacity)
    unfrozen = list(range(len(paths)))
    while unfrozen:
        link, share = _tightest_link(paths, left, unfrozen)
        frozen = [i for i in unfrozen if link in paths[i]]
        for i in frozen:
            rates[i] = share
            _take(left, paths[i], share)
        unfrozen = [i for i in unfrozen if i not in frozen]
    return rates


def _tightest_link(
    paths: Sequence[Sequence[Link]], left: Mapping[Link, float], unfrozen: list[int]
) -> tuple[Link, float]:
    """The link with the smallest fair share for its unfrozen flows, and that share."""
    crossing = {link: 0 for link in left}
    for i in unfrozen:
        for link in paths[i]:
            crossing[link] += 1
    shares = ((link, max(0.0, left[link]) / n) for link, n in crossing.items() if n > 0)
    return min(shares, key=lambda link_share: link_share[1])


def _take(left: dict[Link, float], path: Sequence[Link], rate: float) -> None:
    """Subtract a frozen flow's rate from every link on its path."""
    for link in path:
        left[link] -= rate
