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
    """The state of one progressive filling: capacity left and unfrozen flows per link."""

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

    def run(self, limits: Sequence[float] | None) -> list[Share[Link]]:
        """Freeze flows link by link, tightest first; then return every flow's share."""
        heap: list[tuple[float, int, int]] = []  # (level, rank, flow of a limit or -1 for a link)
        links = list(self.rank)
        for link in links:
            if self.count[link]:
                heap.append((self._level(link), self.rank[link], -1))
        if limits is not None:
            offset = len(links)
            heap += [(lim, offset + i, i) for i, lim in enumerate(limits) if lim < math.inf]
        heapq.heapify(heap)
        while heap:
            level, rank, flow = heapq.heappop(heap)
            if flow >= 0:
                touched = self._freeze(flow, level, None)
            else:
                touched = self._freeze_link(links[rank], level, heap)
            for other in dict.fromkeys(touched):
                if self.count[other] > 0:
                    heapq.heappush(heap, (self._level(other), self.rank[other], -1))
        return [s if s is not None else Share(math.inf, None) for s in self.shares]

    def _freeze_link(
        self, link: Link, level: float, heap: list[tuple[float, int, int]]
    ) -> list[Link]:
        """Freeze the link's unfrozen flows at `level`, unless its key was stale."""
        if self.count[link] == 0:
            return []
        current = self._level(link)
        if current != level:  # stale key: the share grew since it was pushed
            heapq.heappush(heap, (current, self.rank[link], -1))
            return []
        touched: list[Link] = []
        for i in self.members[link]:
            touched += self._freeze(i, level, link)
        return touched

    def _level(self, link: Link) -> float:
        """Fair share of the link for its unfrozen flows (never negative)."""
        return max(0.0, self.left[link]) / self.count[link]

    def _freeze(self, flow: int, rate: float, bottleneck: Link | None) -> list[Link]:
        """Fix the flow's rate, take it from its links; the links still shared come back."""
        if self.shares[flow] is not None:
            return []
        self.shares[flow] = Share(rate, bottleneck)
        for link in self.paths[flow]:
            self.left[link] -= rate
            self.count[link] -= 1
        return [link for link in self.paths[flow] if link != bottleneck]
