"""Max-min fair rates by progressive filling (water-filling)."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
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
    Every link of a path must be in `capacity`; its order breaks ties between links.
    """
    if any(len(path) == 0 for path in paths):
        raise ValueError('"paths" must each cross at least one link')
    if limits is not None and len(limits) != len(paths):
        raise ValueError(f'"limits" must hold one value per path, got {len(limits)}')
    rank = {link: i for i, link in enumerate(capacity)}
    missing = {link for path in paths for link in path} - rank.keys()
    if missing:
        raise KeyError(f"links without a capacity: {sorted(map(repr, missing))}")
    return fill(paths, capacity.__getitem__, rank, limits)


def fill(
    paths: Sequence[Sequence[Link]],
    capacity_of: Callable[[Link], float],
    rank: Mapping[Link, int],
    limits: Sequence[float] | None = None,
) -> list[Share[Link]]:
    """`max_min_shares` with each link's capacity asked of `capacity_of` and ties broken by
    `rank` (lower first): the network's own entry, which has both at hand for every pipe.

    Paths must be non-empty and `limits` one per path (unchecked: `max_min_shares` checks).
    """
    return _Filling(paths, capacity_of, rank).run(limits)


class _Filling(Generic[Link]):
    """The state of one progressive filling.

    Written for thousands of flows per call (a busy server's every client, each behind its
    own access link). A link that only one flow crosses never changes its level (its whole
    capacity), so it is folded into that flow's own cap, together with the flow's limit:
    only the links flows share are kept per link (capacity left, unfrozen flows, members)
    and sit in a heap keyed by their fair share, which only grows as flows freeze, so stale
    keys are re-pushed when popped (unless an entry with the current key is already there: a
    link touched by every freeze would otherwise pile up entries, each refreshed in turn). The
    flows' own caps sit in a second heap. Each step
    freezes whichever is tightest: the first shared link, or the first unfrozen flow's own
    cap; on a tie the lower rank wins and a limit comes after every link, exactly as if the
    private links and limits sat in the links' heap. One `Share` serves all the flows a link
    freezes at once (it is immutable).
    """

    def __init__(self, paths: Sequence[Sequence[Link]], capacity_of: Callable[[Link], float],
                 rank: Mapping[Link, int]) -> None:
        self.paths = paths
        self.rank = rank
        crossings = Counter(chain.from_iterable(paths))
        shared = [link for link, n in crossings.items() if n > 1]
        self.count = {link: crossings[link] for link in shared}
        self.left = {link: float(capacity_of(link)) for link in shared}
        self.members: dict[Link, list[int]] = {link: [] for link in shared}
        self.own: list[tuple[float, int, int, int, Link | None]] = []  # (cap, 0 link | 1 limit, key, flow, link)
        members_of, own = self.members.get, self.own
        for i, path in enumerate(paths):  # one pass: the shared links' members, the flows' own caps
            best = None
            for link in path:
                members = members_of(link)
                if members is not None:
                    members.append(i)
                    continue
                cand = (max(0.0, float(capacity_of(link))), 0, rank[link], i, link)
                if best is None or cand < best:
                    best = cand
            if best is not None:
                own.append(best)
        self.shares: list[Share[Link] | None] = [None] * len(paths)
        self.unfrozen = len(paths)

    def run(self, limits: Sequence[float] | None) -> list[Share[Link]]:
        """Freeze flows, tightest first; then return every flow's share."""
        count, rank, shares = self.count, self.rank, self.shares
        own = self.own
        if limits is not None:
            own += [(lim, 1, i, i, None) for i, lim in enumerate(limits) if lim < math.inf]
        heapq.heapify(own)
        heap = [(self._level(link), rank[link], link) for link in count]
        heapq.heapify(heap)
        newest = {link: level for level, _, link in heap}  # each shared link's latest key in the heap
        while self.unfrozen:
            while own and shares[own[0][3]] is not None:
                heapq.heappop(own)  # its flow froze elsewhere
            if heap and (not own or (heap[0][0], 0, heap[0][1]) < own[0][:3]):
                level, key, link = heapq.heappop(heap)
                if count[link] == 0:
                    continue
                current = self._level(link)
                if current != level:  # stale key: the share grew since it was pushed
                    if newest[link] != current:  # else an entry with the current key is in the heap
                        heapq.heappush(heap, (current, key, link))
                        newest[link] = current
                    continue
                touched = self._freeze(self.members[link], Share(level, link))
            elif own:
                cap, _, _, i, link = heapq.heappop(own)
                touched = self._freeze((i,), Share(cap, link))
            else:
                break
            if not self.unfrozen:
                break  # what is left in the heaps can freeze no one
            for other in touched:
                if count[other] > 0:
                    level = self._level(other)
                    if newest[other] != level:
                        heapq.heappush(heap, (level, rank[other], other))
                        newest[other] = level
        return [s if s is not None else Share(math.inf, None) for s in shares]

    def _level(self, link: Link) -> float:
        """Fair share of the shared link for its unfrozen flows (never negative)."""
        return max(0.0, self.left[link]) / self.count[link]

    def _freeze(self, flows: Sequence[int], share: Share[Link]) -> dict[Link, None]:
        """Give the unfrozen `flows` this share and take it from their shared links; return
        the other shared links they cross (in order, once each): their levels may have moved."""
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
                if link in count:
                    left[link] -= rate
                    count[link] -= 1
                    if link != bottleneck:
                        touched[link] = None
        self.unfrozen -= frozen
        return touched
