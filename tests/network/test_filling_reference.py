"""The filling that folds private links into the flows' own caps gives exactly (bit for bit,
bottlenecks included) what the plain progressive filling it replaced gave: that filling is kept
here as the reference, and both run on random stars, parking lots and ties."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from network import max_min_shares
from network.fairness import Share


def reference_shares(
    paths: Sequence[Sequence[object]],
    capacity: Mapping[object, float],
    limits: Sequence[float] | None = None,
) -> list[Share]:
    """Max-min fair shares, each with its bottleneck; flow i may not exceed `limits[i]`.

    A limit acts as a private link crossed by that flow alone; on a tie a real link wins.
    Work is O(sum of path lengths x log links): links sit in a heap keyed by their fair
    share, which only grows as flows freeze, so stale keys are re-pushed when popped.
    """
    if any(len(path) == 0 for path in paths):
        raise ValueError('"paths" must each cross at least one link')
    if limits is not None and len(limits) != len(paths):
        raise ValueError(f'"limits" must hold one value per path, got {len(limits)}')
    filling = _ReferenceFilling(paths, capacity)
    return filling.run(limits)


class _ReferenceFilling:
    """The state of one progressive filling: capacity left and unfrozen flows per link.

    Written for thousands of flows per call (a busy server's every client): one loop per
    freezing link rather than a call per flow, one `Share` for all the flows a link freezes
    at once (it is immutable, so they may hold the same one), and no popping of the links
    left in the heap once every flow is frozen.
    """

    def __init__(self, paths: Sequence[Sequence[object]], capacity: Mapping[object, float]) -> None:
        self.paths = paths
        self.left = dict(capacity)
        self.rank = {link: i for i, link in enumerate(capacity)}
        self.members: dict[object, list[int]] = {link: [] for link in capacity}
        for i, path in enumerate(paths):
            for link in path:
                self.members[link].append(i)
        self.count = {link: len(flows) for link, flows in self.members.items()}
        self.shares: list[Share | None] = [None] * len(paths)
        self.unfrozen = len(paths)

    def run(self, limits: Sequence[float] | None) -> list[Share]:
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

    def _level(self, link: object) -> float:
        """Fair share of the link for its unfrozen flows (never negative)."""
        return max(0.0, self.left[link]) / self.count[link]

    def _freeze(self, flows: list[int], share: Share) -> dict[object, None]:
        """Give the unfrozen `flows` this share and take it from their links; return the
        other links they cross (in order, once each): their levels may have moved."""
        left, count, paths, shares = self.left, self.count, self.paths, self.shares
        rate, bottleneck = share.rate, share.bottleneck
        touched: dict[object, None] = {}
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


# capacities from a small set so that levels tie often; 0 (a link that is down) and inf too
CAPACITIES = st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 12.5, 1e9, math.inf])


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[list[int]], dict[int, float], list[float] | None]:
    """Links 0..n-1 (rank = number); some flows behind a private link into shared ones."""
    n_links = draw(st.integers(1, 8))
    capacity = {link: draw(CAPACITIES) for link in range(n_links)}
    if not any(c < math.inf for c in capacity.values()):
        capacity[0] = 5.0
    paths = draw(st.lists(st.lists(st.sampled_from(range(n_links)), min_size=1, max_size=4, unique=True),
                          min_size=1, max_size=12))
    limits = draw(st.none() | st.lists(st.sampled_from([1.0, 2.0, 3.0, 5.0, math.inf]), min_size=len(paths),
                                       max_size=len(paths)))
    order = draw(st.permutations(list(capacity)))  # the capacity mapping's order is the tie-break
    return paths, {link: capacity[link] for link in order}, limits


@settings(max_examples=400, deadline=None)
@given(instances())
def test_same_shares_as_the_plain_filling(instance) -> None:
    paths, capacity, limits = instance
    if all(capacity[link] == math.inf for path in paths for link in path) and limits is None:
        return  # no finite constraint: both give inf
    assert max_min_shares(paths, capacity, limits) == reference_shares(paths, capacity, limits)


def test_same_shares_on_a_large_star_with_ties() -> None:
    # 3,000 clients behind links of three speeds (many exactly at the server's level) into one server
    capacity = {"server": 3000.0 * 2.0} | {c: (1.0, 2.0, 3.0)[c % 3] for c in range(3000)}
    paths = [[c, "server"] for c in range(3000)]
    limits = [2.0 if c % 7 == 0 else math.inf for c in range(3000)]
    assert max_min_shares(paths, capacity, limits) == reference_shares(paths, capacity, limits)


def test_a_link_touched_by_every_freeze_is_refreshed_a_bounded_number_of_times(monkeypatch) -> None:
    # 5,000 clients each held below the server's level by its own link: every freeze touches the
    # server link; its stale keys must not pile up and be refreshed again and again (quadratic)
    from network import fairness

    calls = []
    level = fairness._Filling._level
    monkeypatch.setattr(fairness._Filling, "_level", lambda self, link: calls.append(1) or level(self, link))
    n = 5000
    capacity = {"server": 10.0 * n} | {c: 1.0 + c / n for c in range(n)}
    shares = max_min_shares([[c, "server"] for c in range(n)], capacity)
    assert [s.bottleneck for s in shares] == list(range(n))  # each held by its own link
    assert len(calls) < 4 * n
