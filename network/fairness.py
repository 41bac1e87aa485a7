"""Max-min fair rates by progressive filling (water-filling)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Link = TypeVar("Link", bound=Hashable)


@dataclass(frozen=True)
class Share(Generic[Link]):
    """One flow's max-min fair rate and the link that froze it there."""

    rate: float  # in the unit of the capacities
    bottleneck: Link | None  # None: the flow's own limit froze it


def max_min_rates(paths: Sequence[Sequence[Link]], capacity: Mapping[Link, float]) -> list[float]:
    """Max-min fair rate of each flow; flow i crosses the links in `paths[i]`.

    Repeatedly the tightest link (capacity left / unfrozen flows crossing it) freezes
    its flows at that share. Ties go to the link that comes first in `capacity`.
    Rates are in the unit of `capacity`.
    """
    return [share.rate for share in max_min_shares(paths, capacity)]


def max_min_shares(
    paths: Sequence[Sequence[Link]],
    capacity: Mapping[Link, float],
    limits: Sequence[float] | None = None,
) -> list[Share[Link]]:
    """Max-min fair shares, each with its bottleneck; flow i may not exceed `limits[i]`.

    A limit acts as a private link crossed by that flow alone; on a tie a real link wins.
    Work is O(sum of path lengths x log links): links sit in a heap keyed by their fair
    share, which only grows as flows freeze, so stale keys are re-pushed when popped.
    """
    if any(len(path) == 0 for path in paths):
        raise ValueError('"paths" must each cross at least one link')
    if limits is not None and len(limits) != len(paths):
        raise ValueError(f'"limits" must hold one value per path, got {len(limits)}')
    filling = _Filling(paths, capacity)
    return filling.run(limits)


class _Filling(Generic[Link]):
    """The state of one progressive filling: capacity left and unfrozen flows per link.

    Written for thousands of flows per call (a busy server's every client): one loop per
    freezing link rather than a call per flow, one `Share` for all the flows a link freezes
    at once (it is immutable, so they may hold the same one), and no popping of the links
    left in the heap once every flow is frozen.
    """

    def __init__(self, paths: Sequence[Sequence[Link]], capacity: Mapping[Link, float]) -> None:
        self.paths = paths
        self.left = dict(capacity)
        self.rank = {link: i for i, link in enumerate(capacity)}
        self.members: dict[Link, list[int]] = {link: [] for link in capacity}
        for i, path in enumerate(paths):
            for link in path:
                self.members[link].append(i)
        self.count = {link: len(flows) for link, flows in self.members.items()}
        self.shares: list[Share[Link] | None] = [None] * len(paths)
        self.unfrozen = len(paths)

    def run(self, limits: Sequence[float] | None) -> list[Share[Link]]:
        """Freeze flows link by link, tightest first; then return every flow's share."""
        count, rank = self.count, self.rank
        links = list(rank)
        # (level, rank, flow of a limit or -1 for a link)
        heap = [(self._level(link), rank[link], -1) for link in links if count[link]]
        if limits is not None:
            offset = len(links)
            heap += [(lim, offset + i, i) for i, lim in enumerate(limits) if lim < math.inf]
        heapq.heapify(heap)
        while heap:
            level, key, flow = heapq.heappop(heap)
            if flow >= 0:
                touched = self._freeze([flow], Share(level, None))
            else:
                link = links[key]
                if count[link] == 0:
                    continue
                current = self._level(link)
                if current != level:  # stale key: the share grew since it was pushed
                    heapq.heappush(heap, (current, key, -1))
                    continue
                touched = self._freeze(self.members[link], Share(level, link))
            if not self.unfrozen:
                break  # what is left in the heap can freeze no one
            for other in touched:
                if count[other] > 0:
                    heapq.heappush(heap, (self._level(other), rank[other], -1))
        return [s if s is not None else Share(math.inf, None) for s in self.shares]

    def _level(self, link: Link) -> float:
        """Fair share of the link for its unfrozen flows (never negative)."""
        return max(0.0, self.left[link]) / self.count[link]

    def _freeze(self, flows: list[int], share: Share[Link]) -> dict[Link, None]:
        """Give the unfrozen `flows` this share and take it from their links; return the
        other links they cross (in order, once each): their levels may have moved."""
        left, count, paths, shares = self.left, self.count, self.paths, self.shares
        rate, bottleneck = share.rate, share.bottleneck
        touched: dict[Link, None] = {}
        frozen = 0
        for i in flows:
            if shares[i] is not None:
                continue
            shares[i] = share
            frozen += 1
            for link in paths[i]:
                left[link] -= rate
                count[link] -= 1
                if link != bottleneck:
                    touched[link] = None
        self.unfrozen -= frozen
        return touched
