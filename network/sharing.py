"""Max-min fair sharing of the pipes among the active flows, kept up to date incrementally.

The sharing tracks, per pipe, how many active flows cross it and the sum of their rates, so
that most changes touch one flow: a new flow whose tightest constraint is its own (a pipe it
crosses alone, or its loss-limited rate) is admitted without touching the others, and an
ending flow frees rate for others only if it crossed a full pipe. Any other change marks the
sharing `full`: every share is recomputed, and only the flows whose share moved are re-timed.
A pipe that is down has nothing to share; under the "fail" outage policy the flows crossing
it end, under "stall" they wait, and time out after the policy's `timeout_s`.

When the network must next look at each flow (served, an outage change on its path, a
timeout) is kept in a heap. Entries are never removed early: one whose flow has ended, or has
been given a new allocation since (its version moved on), is outdated and skipped when reached.
The heap is worked inline, not behind methods of its own, since that runs on every event.

Times are read from the simpy clock; the clock itself (waking, alarms) is the `Network`'s.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping

import simpy

from network.fairness import Share, fill
from network.links import EPS_S, OutagePolicy, Pipe
from network.transfer import Transfer


def capacity_now(pipe: Pipe, now_s: float) -> float:
    """What the sharing may hand out on the pipe now: 0 while it is down."""
    if pipe.outages and pipe.is_down(now_s):
        return 0.0
    return pipe.rate_bytes_per_s


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
        self._due: list[tuple[float, int, int, Transfer]] = []  # (due_s, seq, version, flow)
        self._joining: deque[Transfer] = deque()  # started, waiting to be shared out
        self._full = False  # a change that may move every share: reallocate all
        self._users: dict[Pipe, int] = {}  # active flows crossing each pipe
        self._load: dict[Pipe, float] = {}  # sum of their rates, bytes/s
        self._outaged = 0  # active flows with a pipe that goes down at some time on their path

    def add(self, flow: Transfer) -> bool:
        """Add a starting flow; True if admitted at once, False if it waits for `share`.

        It is admitted at once only when nothing is waiting to be shared and nothing is due
        now, so that ends and outage changes of this instant are settled first, as `share`
        would settle them; and only if that disturbs no other flow.
        """
        self.flows[flow] = None
        if flow.route.with_outages:
            self._outaged += 1
        users = self._users
        for hop in flow.route.path:
            users[hop] = users.get(hop, 0) + 1
        due = self._due
        if self._joining or self._full or (due and due[0][0] <= flow.since_s + EPS_S):
            self._joining.append(flow)
            return False
        if self._join(flow):
            return True
        self._full = True
        return False

    def share(self) -> None:
        """Settle what is due now, then share out the waiting flows (all anew if need be).

        Settling ends the flows served or timed out by now, and notes the outage changes on
        flows' paths (which may move every share).
        """
        now_s = self.env.now
        due, flows = self._due, self.flows
        while due and due[0][0] <= now_s + EPS_S:
            _, _, version, flow = heapq.heappop(due)
            if flow not in flows or version != flow.version:
                continue  # outdated entry
            if flow.due_kind == "change":
                self._full = True
            else:
                self._end(flow, "ok" if flow.due_kind == "served" else "timeout")
        while self._joining and not self._full:
            self._full = not self._join(self._joining.popleft())
        if self._full:
            self._reallocate()

    def next_due_s(self) -> float:
        """When some flow is next due (served, an outage change, a timeout); inf if none.

        Drops the outdated entries before it.
        """
        due, flows = self._due, self.flows
        while due:
            _, _, version, flow = due[0]
            if flow in flows and version == flow.version:
                return due[0][0]
            heapq.heappop(due)
        return math.inf

    # -- single flows -----------------------------------------------------------------------
    def _end(self, flow: Transfer, status: str) -> None:
        """Remove the flow and report its end; reallocate all if others gain from it.

        Only a pipe that was full can hand the freed rate to flows bottlenecked on it.
        """
        del self.flows[flow]
        if flow.route.with_outages:
            self._outaged -= 1
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
        for hop in flow.route.path:  # capacity_now inlined: this runs for most new flows
            capacity = 0.0 if hop.outages and hop.is_down(now_s) else hop.rate_bytes_per_s
            left = capacity - load.get(hop, 0.0)
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
        flow.assign(rate, bottleneck, now_s, self.policy.timeout_s)
        if flow.due_s < math.inf:
            heapq.heappush(self._due, (flow.due_s, flow.seq, flow.version, flow))

    # -- all flows at once ------------------------------------------------------------------
    def _reallocate(self) -> None:
        """Drop the failed flows, share the pipes anew; re-time each flow whose share moved."""
        self._joining.clear()
        now_s = float(self.env.now)
        if self.policy.action == "fail" and self._outaged:
            self._fail_down(now_s)
        self._full = False
        flows = list(self.flows)
        self._load = load = {}
        due, timeout_s = self._due, self.policy.timeout_s
        for flow, share in zip(flows, self._shares(flows, now_s)):
            rate = share.rate
            for hop in flow.route.path:
                load[hop] = load.get(hop, 0.0) + rate
            if flow.keeps(share, now_s):
                continue
            flow.remaining_bytes = max(0.0, flow.remaining_bytes - flow.served_bytes(now_s))
            flow.since_s = now_s  # the old allocation settled up to now
            flow.assign(rate, share.bottleneck, now_s, timeout_s)  # _assign, inlined: every flow may come here
            if flow.due_s < math.inf:
                heapq.heappush(due, (flow.due_s, flow.seq, flow.version, flow))
        if len(self._due) > 2 * len(flows) + 64:  # outdated entries far outnumber the flows
            self._due = [(f.due_s, f.seq, f.version, f) for f in flows if f.due_s < math.inf]
            heapq.heapify(self._due)

    def _fail_down(self, now_s: float) -> None:
        """End, as failed, every flow with a pipe down on its path."""
        for flow in list(self.flows):
            if any(p.is_down(now_s) for p in flow.route.path):
                self._end(flow, "failed")

    def _shares(self, flows: list[Transfer], now_s: float) -> list[Share[Pipe]]:
        """Max-min fair shares over the pipes the flows cross (a pipe that is down has 0)."""
        return fill([f.route.path for f in flows], lambda pipe: capacity_now(pipe, now_s), self._rank,
                    [f.route.limit_bytes_per_s for f in flows])
