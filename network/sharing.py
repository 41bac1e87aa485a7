"""Max-min fair sharing of the pipes among the active flows, kept up to date incrementally.

The sharing tracks, per pipe, how many active flows cross it and the sum of their rates, so
that most changes touch one flow: a new flow whose tightest constraint is its own (a pipe it
crosses alone, or its loss-limited rate) is admitted without touching the others, and an
ending flow frees rate for others only if it crossed a full pipe. Any other change marks the
sharing `full`: every share is recomputed, and only the flows whose share moved are re-timed.
A pipe that is down has nothing to share; under the "fail" outage policy the flows crossing
it end, under "stall" they wait, and time out after the policy's `timeout_s`.

Times are read from the simpy clock; the clock itself (waking, alarms) is the `Network`'s.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping

import simpy

from network.fairness import Share, max_min_shares
from network.links import EPS_S, OutagePolicy, Pipe
from network.transfer import Transfer


def capacity_now(pipe: Pipe, now_s: float) -> float:
    """What the sharing may hand out on the pipe now: 0 while it is down."""
    if pipe.outages and pipe.is_down(now_s):
        return 0.0
    return pipe.rate_bytes_per_s


class DueQueue:
    """When the network must next look at each flow, earliest first.

    Entries are never removed early: one whose flow has ended, or has been given a new
    allocation since (its version moved on), is outdated and skipped when reached.
    """

    def __init__(self, flows: Mapping[Transfer, None]) -> None:
        self._flows = flows  # the active flows; an entry for any other is outdated
        self._heap: list[tuple[float, int, int, Transfer]] = []  # (due_s, seq, version, flow)

    def push(self, flow: Transfer) -> None:
        """Queue the flow at its due time, under its current allocation."""
        heapq.heappush(self._heap, (flow.due_s, flow.seq, flow.version, flow))

    def due_by(self, t_s: float) -> bool:
        """Whether some entry, outdated or not, is due by t_s."""
        return bool(self._heap) and self._heap[0][0] <= t_s + EPS_S

    def pop_due(self, t_s: float) -> Transfer | None:
        """The next flow due by t_s, taken off the queue; None when there is none."""
        while self.due_by(t_s):
            _, _, version, flow = heapq.heappop(self._heap)
            if flow in self._flows and version == flow.version:
                return flow
        return None

    def earliest_s(self) -> float:
        """When the earliest flow is due (inf if none), dropping outdated entries before it."""
        heap = self._heap
        while heap and self._outdated(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def compact(self, flows: list[Transfer]) -> None:
        """Rebuild from the active `flows` once outdated entries far outnumber them."""
        if len(self._heap) > 2 * len(flows) + 64:
            self._heap = [(f.due_s, f.seq, f.version, f) for f in flows if f.due_s < math.inf]
            heapq.heapify(self._heap)

    def _outdated(self, entry: tuple[float, int, int, Transfer]) -> bool:
        _, _, version, flow = entry
        return flow not in self._flows or version != flow.version


class Sharing:
    """The active flows, each with its max-min fair rate over the pipes of its path.

    `on_end(flow, status)` is called for each flow that ends: served, failed or timed out.
    """

    def __init__(
        self,
        env: simpy.Environment,
        rank: Mapping[Pipe, int],
        policy: OutagePolicy,
        on_end: Callable[[Transfer, str], None],
    ) -> None:
        self.env = env
        self.policy = policy
        self.flows: dict[Transfer, None] = {}  # active flows, in start order
        self._rank = rank  # pipe creation order, breaks ties in the sharing
        self._on_end = on_end
        self._due = DueQueue(self.flows)
        self._joining: deque[Transfer] = deque()  # started, waiting to be shared out
        self._full = False  # a change that may move every share: reallocate all
        self._users: dict[Pipe, int] = {}  # active flows crossing each pipe
        self._load: dict[Pipe, float] = {}  # sum of their rates, bytes/s

    def add(self, flow: Transfer) -> bool:
        """Add a starting flow; True if admitted at once, False if it waits for `share`.

        It is admitted at once only when nothing is waiting to be shared and nothing is due
        now, so that ends and outage changes of this instant are settled first, as `share`
        would settle them; and only if that disturbs no other flow.
        """
        self.flows[flow] = None
        users = self._users
        for hop in flow.route.path:
            users[hop] = users.get(hop, 0) + 1
        if self._joining or self._full or self._due.due_by(flow.since_s):
            self._joining.append(flow)
            return False
        if self._join(flow):
            return True
        self._full = True
        return False

    def share(self) -> None:
        """Settle what is due now, then share out the waiting flows (all anew if need be)."""
        self._settle_due()
        while self._joining and not self._full:
            self._full = not self._join(self._joining.popleft())
        if self._full:
            self._reallocate()

    def next_due_s(self) -> float:
        """When some flow is next due (served, an outage change, a timeout); inf if none."""
        return self._due.earliest_s()

    # -- single flows -----------------------------------------------------------------------
    def _settle_due(self) -> None:
        """End the flows served or timed out by now; note outage changes on flows' paths."""
        now_s = self.env.now
        while (flow := self._due.pop_due(now_s)) is not None:
            if flow.due_kind == "change":
                self._full = True
            else:
                self._end(flow, "ok" if flow.due_kind == "served" else "timeout")

    def _end(self, flow: Transfer, status: str) -> None:
        """Remove the flow and report its end; reallocate all if others gain from it.

        Only a pipe that was full can hand the freed rate to flows bottlenecked on it.
        """
        del self.flows[flow]
        now_s = self.env.now
        rate = flow.rate_bytes_per_s
        users, load = self._users, self._load
        for hop in flow.route.path:
            users[hop] -= 1
            if rate > 0 and not self._full and users[hop] > 0 and self._is_full(hop, now_s):
                self._full = True
            if users[hop] == 0:
                load[hop] = 0.0  # no float residue left behind
            else:
                load[hop] = load.get(hop, 0.0) - rate
        self._on_end(flow, status)

    def _is_full(self, pipe: Pipe, now_s: float) -> bool:
        """Whether the flows' rates fill the pipe (within float slack)."""
        capacity = capacity_now(pipe, now_s)
        return capacity - self._load.get(pipe, 0.0) <= 1e-9 * capacity

    def _join(self, flow: Transfer) -> bool:
        """Admit a flow without touching the others, if that is max-min fair; else False.

        It is when the flow's tightest constraint (capacity left on each pipe, or its own
        limit) is one no other flow shares: a pipe it crosses alone, or its limit.
        """
        if flow not in self.flows:
            return True
        now_s = float(self.env.now)
        rate, own = flow.route.limit_bytes_per_s, None
        tight_shared = math.inf
        users, load = self._users, self._load
        for hop in flow.route.path:
            left = capacity_now(hop, now_s) - load.get(hop, 0.0)
            if users[hop] > 1:
                tight_shared = min(tight_shared, left)
            elif left <= rate:
                rate, own = left, hop
        if not (0 < rate <= tight_shared) or (own is None and rate == math.inf):
            return False
        self._assign(flow, rate, own, now_s)
        return True

    def _assign(self, flow: Transfer, rate: float, bottleneck: Pipe | None, now_s: float) -> None:
        """Give the flow its rate, counted in the pipes' load, and queue when it is due."""
        load = self._load
        for hop in flow.route.path:
            load[hop] = load.get(hop, 0.0) + rate - flow.rate_bytes_per_s
        flow.allocate(rate, bottleneck)
        flow.set_due(now_s, self.policy.timeout_s)
        if flow.due_s < math.inf:
            self._due.push(flow)

    # -- all flows at once ------------------------------------------------------------------
    def _reallocate(self) -> None:
        """Drop the failed flows, share the pipes anew; re-time each flow whose share moved."""
        self._joining.clear()
        now_s = float(self.env.now)
        if self.policy.action == "fail":
            self._fail_down(now_s)
        self._full = False
        flows = list(self.flows)
        self._load = load = {}
        for flow, share in zip(flows, self._shares(flows, now_s)):
            if flow.keeps(share, now_s):
                for hop in flow.route.path:
                    load[hop] = load.get(hop, 0.0) + share.rate
                continue
            flow.settle(now_s)
            self._assign(flow, share.rate, share.bottleneck, now_s)
        self._due.compact(flows)

    def _fail_down(self, now_s: float) -> None:
        """End, as failed, every flow with a pipe down on its path."""
        for flow in list(self.flows):
            if any(p.is_down(now_s) for p in flow.route.path):
                self._end(flow, "failed")

    def _shares(self, flows: list[Transfer], now_s: float) -> list[Share[Pipe]]:
        """Max-min fair shares over the pipes the flows cross (a pipe that is down has 0)."""
        crossed = {pipe for flow in flows for pipe in flow.route.path}
        ordered = sorted(crossed, key=self._rank.__getitem__)
        capacity = {p: capacity_now(p, now_s) for p in ordered}
        limits = [f.route.limit_bytes_per_s for f in flows]
        return max_min_shares([f.route.path for f in flows], capacity, limits)
