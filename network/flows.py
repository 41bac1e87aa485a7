"""A fluid-flow network on the simpy clock: pipes shared max-min fairly by flows.

The network keeps the flows' shares with callbacks on the simpy clock, not processes, so a
transfer costs few events: an alarm for when it is served (shared by flows due together)
and its arrival, put on the queue once at its final time and fired with the TransferRecord.
At each alarm the network ends the flows that are due, admits the waiting ones and sets the
next alarm.

A new flow whose tightest constraint is its own (a pipe it crosses alone, or its
loss-limited rate) is admitted at once, without touching the others. Otherwise it waits for
a wake later in the same instant, so that flows starting together are shared out in one
batch: every share is recomputed, and only the flows whose share moved are re-timed.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import simpy
from simpy.events import NORMAL

from network.fairness import Share, max_min_shares
from network.links import (
    EPS_S,
    Jitter,
    Outage,
    OutagePolicy,
    Pipe,
    Trace,
    mathis_wire_bytes_per_s,
)
from network.overhead import TCP_IP, ProtocolOverhead

DONE_BYTES = 1e-9  # a flow with this little left to serve is finished (float slack)

__all__ = ["DONE_BYTES", "Network", "Pipe", "TransferRecord"]


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """One finished transfer, in simulated seconds."""

    label: str
    start_s: float  # when the transfer was asked for
    end_s: float  # when its last byte arrived, or when it failed
    payload_bytes: int
    wire_bytes: int  # payload plus protocol overhead (retransmissions not counted)
    status: str = "ok"  # ok, failed (outage under "fail"), timeout (stalled too long)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class _Route:
    """What a transfer needs of its path that never changes: worked out once per path."""

    path: tuple[Pipe, ...]
    loss_rate: float  # 1 - prod(1 - p_i)
    limit_bytes_per_s: float  # loss-limited TCP rate in bytes pushed (inf if none)
    varying: tuple[Pipe, ...]  # pipes whose capacity follows a trace
    with_outages: tuple[Pipe, ...]  # pipes that go down at some time
    jittered: bool  # some pipe draws extra delay per transfer
    delay_s: float  # the one-way delay without jitter


class _Transfer(simpy.Event):
    """One transfer: the event `Network.transfer` returns, and the flow that serves it.

    As an event, its value is the TransferRecord; it goes on the simpy queue once, straight
    at its final time (last byte served plus the propagation delay), so a transfer needs no
    process and no timeout of its own. One object with slots for both roles keeps the
    garbage collector's work small: a large run has tens of thousands in flight.

    As a flow, it holds an allocation since `since_s`: it progresses at a fixed rate, or,
    when a varying pipe is its bottleneck, as a fixed fraction of that pipe's service;
    either way never faster than the full service of the other varying pipes on its path
    (`caps`).
    """

    __slots__ = (
        "seq",  # start order, breaks ties
        "route",
        "label",
        "start_s",
        "payload_bytes",
        "wire_bytes",
        "delay_s",  # propagation, jitter drawn at the start
        "remaining_bytes",  # still to serve at since_s, retransmissions included
        "since_s",
        "rate_bytes_per_s",
        "bottleneck",  # where max-min froze it; None: its own limit
        "follows",  # the varying bottleneck whose service it shares, or None
        "fraction",  # its share of `follows`
        "caps",
        "stalled_since_s",  # None unless stalled behind a pipe that is down
        "due_s",  # when the network must next look at it
        "due_kind",  # served, change (of an outage) or timeout
        "version",  # bumped at each allocation; older heap entries are stale
    )

    def __init__(
        self,
        env: simpy.Environment,
        on_arrival: Callable[[simpy.Event], None],
        seq: int,
        route: _Route,
        label: str,
        payload_bytes: int,
        wire_bytes: int,
        delay_s: float,
    ) -> None:
        self.env = env  # Event.__init__, inlined as simpy's own Timeout does
        self.callbacks: list[Callable[[simpy.Event], None]] = [on_arrival]  # before waiters
        self.seq = seq
        self.route = route
        self.label = label
        self.start_s = self.since_s = float(env.now)
        self.payload_bytes = payload_bytes
        self.wire_bytes = wire_bytes
        self.delay_s = delay_s
        self.remaining_bytes = wire_bytes / (1.0 - route.loss_rate)  # each packet 1/(1-p) times
        self.rate_bytes_per_s = 0.0
        self.bottleneck: Pipe | None = None
        self.follows: Pipe | None = None
        self.fraction = 0.0
        self.caps: tuple[Pipe, ...] = ()
        self.stalled_since_s: float | None = None
        self.due_s = math.inf
        self.due_kind = "change"
        self.version = 0

    def arrive_in(self, delay_s: float, record: TransferRecord) -> None:
        """Trigger the event `delay_s` from now with `record` as its value, as a Timeout."""
        self._ok = True
        self._value = record
        self.env.schedule(self, NORMAL, delay_s)

    def served_bytes(self, t_s: float) -> float:
        """Bytes served from since_s to t_s under the current allocation."""
        if self.rate_bytes_per_s <= 0:
            return 0.0
        if self.follows is not None:
            got = self.fraction * self.follows.capacity.served_bytes(self.since_s, t_s)
        else:
            got = self.rate_bytes_per_s * (t_s - self.since_s)
        for pipe in self.caps:
            got = min(got, pipe.capacity.served_bytes(self.since_s, t_s))
        return got

    def served_at_s(self) -> float:
        """When the remaining bytes will have been served under the current allocation."""
        if self.rate_bytes_per_s <= 0:
            return math.inf
        if self.follows is not None:
            end_s = self.follows.capacity.time_to_serve(
                self.since_s, self.remaining_bytes / self.fraction
            )
        else:
            end_s = self.since_s + self.remaining_bytes / self.rate_bytes_per_s
        for pipe in self.caps:
            end_s = max(end_s, pipe.capacity.time_to_serve(self.since_s, self.remaining_bytes))
        return end_s


class Network:
    """Pipes and the flows crossing them, timed as a fluid on the simpy clock.

    Each active flow gets its max-min fair share over the pipes of its path (a trace pipe
    counts with its mean rate); shares are recomputed whenever a flow starts or finishes
    and when an outage on its path begins or ends. A flow whose bottleneck is a trace pipe
    receives that share as a fraction of the trace's delivery opportunities. A transfer
    ends once its last byte is served plus the path's one-way propagation delay. See
    docs/network.md.

    Read times from the records (or run until a process), not from ``env.now`` after
    ``env.run()``: simpy cannot cancel a timeout, so a wake-up made obsolete by a change of
    flows may still move the clock past the last transfer.
    """

    def __init__(
        self,
        env: simpy.Environment,
        *,
        overhead: ProtocolOverhead = TCP_IP,
        outage_policy: OutagePolicy = OutagePolicy(),
    ) -> None:
        if not isinstance(overhead, ProtocolOverhead):
            raise ValueError(f'"overhead" must be a ProtocolOverhead, got {overhead!r}')
        if not isinstance(outage_policy, OutagePolicy):
            raise ValueError(f'"outage_policy" must be an OutagePolicy, got {outage_policy!r}')
        self.env = env
        self.overhead = overhead
        self.outage_policy = outage_policy
        self.records: list[TransferRecord] = []  # finished transfers, in completion order
        self._pipes: dict[str, Pipe] = {}
        self._rank: dict[Pipe, int] = {}  # creation order breaks ties in the sharing
        self._jitter: dict[Pipe, np.random.Generator] = {}
        self._routes: dict[tuple[Pipe, ...], _Route] = {}  # cache, keyed by the pipes
        self._flows: dict[_Transfer, None] = {}  # active flows, in start order
        self._due: list[tuple[float, int, int, _Transfer]] = []  # (due_s, seq, version, flow)
        self._seq = itertools.count()
        self._joining: deque[_Transfer] = deque()  # started, waiting for the wake to be shared
        self._waking = False  # a wake is queued at this instant
        self._full = False  # a change that may move every share: reallocate all
        self._users: dict[Pipe, int] = {}  # active flows crossing each pipe
        self._load: dict[Pipe, float] = {}  # sum of their rates, bytes/s
        self._alarm: simpy.Timeout | None = None  # pending, for the earliest due flow
        self._alarm_at_s = math.inf
        self._on_arrival = self._keep_record  # bound once, not once per transfer

    # -- building -------------------------------------------------------------------------
    def pipe(
        self,
        name: str,
        *,
        rate_mbps: float | None = None,
        delay_s: float = 0.0,
        trace: Trace | None = None,
        jitter: Jitter | None = None,
        loss_rate: float = 0.0,
        outages: Sequence[Outage] = (),
    ) -> Pipe:
        """Add a pipe: a constant `rate_mbps` or a `trace`, plus delay, jitter, loss, outages."""
        if name in self._pipes:
            raise ValueError(f'"name" must be unique, pipe {name!r} already exists')
        new_pipe = Pipe(name, rate_mbps, delay_s, trace, jitter, loss_rate, tuple(outages))
        self._pipes[name] = new_pipe
        self._rank[new_pipe] = len(self._rank)
        if jitter is not None:
            self._jitter[new_pipe] = jitter.stream(name)
        return new_pipe

    # -- transferring ---------------------------------------------------------------------
    @property
    def active_flows(self) -> int:
        """Transfers still having bytes to serve (not those only propagating)."""
        return len(self._flows)

    def transfer(
        self, payload_bytes: int, path: Sequence[Pipe], *, label: str = ""
    ) -> simpy.Event:
        """Start sending `payload_bytes` along `path`; the event's value is a TransferRecord.

        The event fires when the last byte has arrived (or the transfer failed): yield it
        from a process, as any simpy event.
        """
        wire_bytes = self.overhead.wire_bytes(payload_bytes)  # validates payload_bytes
        route = self._route(path)
        delay_s = self._propagation_s(route)  # jitter drawn when the transfer starts
        flow = _Transfer(
            self.env, self._on_arrival, next(self._seq), route, label, payload_bytes, wire_bytes,
            delay_s,
        )
        if wire_bytes > 0:
            self._start_flow(flow)
        else:
            self._finish(flow, "ok")
        return flow

    def _keep_record(self, arrival: simpy.Event) -> None:
        """Add the arrived transfer's record to `records`."""
        self.records.append(arrival.value)

    def _route(self, path: Sequence[Pipe]) -> _Route:
        """The checked path and what never changes about it (cached: paths are reused)."""
        hops = tuple(path)
        try:
            route = self._routes.get(hops)
        except TypeError:  # an unhashable hop, so not a pipe: let the check say so
            route = None
        if route is None:
            route = self._new_route(self._checked_path(hops))
            self._routes[hops] = route
        return route

    def _checked_path(self, hops: tuple[Pipe, ...]) -> tuple[Pipe, ...]:
        """The path, once every pipe is known here and appears once."""
        if not hops:
            raise ValueError('"path" must cross at least one pipe')
        for hop in hops:
            if not isinstance(hop, Pipe) or self._pipes.get(hop.name) is not hop:
                raise ValueError(f'"path" must hold pipes of this network, got {hop!r}')
        if len(set(hops)) != len(hops):
            raise ValueError(f'"path" must cross each pipe once, got {[p.name for p in hops]}')
        return hops

    def _new_route(self, path: tuple[Pipe, ...]) -> _Route:
        """The path's loss, TCP limit, varying and outage pipes, and its delay."""
        loss_rate = 1.0 - math.prod(1.0 - p.loss_rate for p in path)
        rtt_s = 2 * sum(p.delay_s for p in path)
        packet_bytes = self.overhead.mss_bytes + self.overhead.header_bytes
        goodput_cap = mathis_wire_bytes_per_s(packet_bytes, rtt_s, loss_rate)
        delay_s = 0.0
        for hop in path:  # summed in path order, as with jitter below
            delay_s += hop.delay_s
        return _Route(
            path=path,
            loss_rate=loss_rate,
            limit_bytes_per_s=goodput_cap / (1.0 - loss_rate),
            varying=tuple(p for p in path if p.capacity.varying),
            with_outages=tuple(p for p in path if p.outages),
            jittered=any(p.jitter is not None for p in path),
            delay_s=delay_s,
        )

    def _propagation_s(self, route: _Route) -> float:
        """One-way delay of the path: each pipe's delay plus a fresh jitter draw."""
        if not route.jittered:
            return route.delay_s
        total_s = 0.0
        for hop in route.path:
            extra_s = 0.0
            if hop.jitter is not None:
                extra_s = hop.jitter.draw_s(self._jitter[hop])
            total_s += max(0.0, hop.delay_s + extra_s)
        return total_s

    def _start_flow(self, flow: _Transfer) -> None:
        """Add the flow to the shared pipes: admit it now if it disturbs no one, else wake.

        It is admitted at once only when nothing is waiting to be shared and nothing is due
        now, so that ends and outage changes of this instant are settled first, as the wake
        would settle them.
        """
        self._flows[flow] = None
        users = self._users
        for hop in flow.route.path:
            users[hop] = users.get(hop, 0) + 1
        if self._joining or self._full or self._due_by(flow.since_s):
            self._joining.append(flow)
            self._wake()
        elif self._join(flow):
            self._set_alarm()
        else:
            self._full = True
            self._wake()

    def _due_by(self, t_s: float) -> bool:
        """Whether some flow is due (served, an outage change, a timeout) by t_s."""
        return bool(self._due) and self._due[0][0] <= t_s + EPS_S

    def _finish(self, flow: _Transfer, status: str) -> None:
        """Fire the transfer's arrival: after the propagation delay if served, else now."""
        now_s = float(self.env.now)
        delay_s = flow.delay_s if status == "ok" else 0.0
        record = TransferRecord(
            flow.label, flow.start_s, now_s + delay_s, flow.payload_bytes, flow.wire_bytes, status
        )
        flow.arrive_in(delay_s, record)

    # -- waking ---------------------------------------------------------------------------
    def _wake(self) -> None:
        """Queue one wake at this instant, after the events already queued for it."""
        if not self._waking:
            self._waking = True
            self.env.timeout(0).callbacks.append(self._on_wake)

    def _on_wake(self, _event: simpy.Event) -> None:
        """The queued wake: share out the flows that started at this instant."""
        self._waking = False
        self._share()

    def _on_alarm(self, alarm: simpy.Event) -> None:
        """The alarm for the earliest due flow; one that a sooner alarm replaced is ignored."""
        if alarm is self._alarm:
            self._alarm = None
            self._share()

    def _share(self) -> None:
        """Share the pipes: settle what is due, admit new flows, set the alarm for the next."""
        self._settle_due()
        while self._joining and not self._full:
            self._full = not self._join(self._joining.popleft())
        if self._full:
            self._reallocate()
        self._set_alarm()

    def _set_alarm(self) -> None:
        """Have a timeout pending for the earliest due flow (keep one that is not later)."""
        due = self._due
        while due and self._is_stale(due[0]):
            heapq.heappop(due)
        if due and (self._alarm is None or self._alarm_at_s > due[0][0]):
            due_s = due[0][0]
            self._alarm = self.env.timeout(max(0.0, due_s - self.env.now))
            self._alarm.callbacks.append(self._on_alarm)
            self._alarm_at_s = due_s

    def _is_stale(self, entry: tuple[float, int, int, _Transfer]) -> bool:
        _, _, version, flow = entry
        return flow not in self._flows or version != flow.version

    # -- sharing --------------------------------------------------------------------------
    def _settle_due(self) -> None:
        """End the flows served or timed out by now; note outage changes on flows' paths."""
        now_s = self.env.now
        while self._due_by(now_s):
            _, _, version, flow = heapq.heappop(self._due)
            if flow not in self._flows or version != flow.version:
                continue  # stale entry
            if flow.due_kind == "change":
                self._full = True
            else:
                self._end(flow, "ok" if flow.due_kind == "served" else "timeout")

    def _end(self, flow: _Transfer, status: str) -> None:
        """Remove the flow and fire its arrival; reallocate all if others gain from it.

        Only a pipe that was full can hand the freed rate to flows bottlenecked on it.
        """
        del self._flows[flow]
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
        self._finish(flow, status)

    def _is_full(self, pipe: Pipe, now_s: float) -> bool:
        """Whether the flows' rates fill the pipe (within float slack)."""
        capacity = self._capacity(pipe, now_s)
        return capacity - self._load.get(pipe, 0.0) <= 1e-9 * capacity

    @staticmethod
    def _capacity(pipe: Pipe, now_s: float) -> float:
        """What the sharing may hand out on the pipe now: 0 while it is down."""
        if pipe.outages and pipe.is_down(now_s):
            return 0.0
        return pipe.rate_bytes_per_s

    def _join(self, flow: _Transfer) -> bool:
        """Admit a flow without touching the others, if that is max-min fair; else False.

        It is when the flow's tightest constraint (capacity left on each pipe, or its own
        limit) is one no other flow shares: a pipe it crosses alone, or its limit.
        """
        if flow not in self._flows:
            return True
        now_s = float(self.env.now)
        rate, own = flow.route.limit_bytes_per_s, None
        tight_shared = math.inf
        users, load = self._users, self._load
        for hop in flow.route.path:
            left = self._capacity(hop, now_s) - load.get(hop, 0.0)
            if users[hop] > 1:
                tight_shared = min(tight_shared, left)
            elif left <= rate:
                rate, own = left, hop
        if not (0 < rate <= tight_shared) or (own is None and rate == math.inf):
            return False
        self._assign(flow, rate, own, now_s)
        return True

    def _reallocate(self) -> None:
        """Drop the failed flows, share the pipes anew; re-time each flow whose share moved."""
        self._joining.clear()
        now_s = float(self.env.now)
        if self.outage_policy.action == "fail":
            for flow in list(self._flows):
                if any(p.is_down(now_s) for p in flow.route.path):
                    self._end(flow, "failed")
        self._full = False
        flows = list(self._flows)
        self._load = load = {}
        for flow, share in zip(flows, self._shares(flows, now_s)):
            if self._keeps(flow, share, now_s):
                for hop in flow.route.path:
                    load[hop] = load.get(hop, 0.0) + share.rate
                continue
            flow.remaining_bytes = max(0.0, flow.remaining_bytes - flow.served_bytes(now_s))
            flow.since_s = now_s
            flow.rate_bytes_per_s = 0.0
            self._assign(flow, share.rate, share.bottleneck, now_s)
        if len(self._due) > 2 * len(flows) + 64:  # drop the stale entries
            self._due = [(f.due_s, f.seq, f.version, f) for f in flows if f.due_s < math.inf]
            heapq.heapify(self._due)

    @staticmethod
    def _keeps(flow: _Transfer, share: Share[Pipe], now_s: float) -> bool:
        """Whether the flow may keep its allocation and due time: same share, due later."""
        return (
            flow.version > 0
            and share.rate == flow.rate_bytes_per_s
            and share.bottleneck is flow.bottleneck
            and flow.due_s > now_s + EPS_S
        )

    def _shares(self, flows: list[_Transfer], now_s: float) -> list[Share[Pipe]]:
        """Max-min fair shares over the pipes the flows cross (a pipe that is down has 0)."""
        crossed = {pipe for flow in flows for pipe in flow.route.path}
        ordered = sorted(crossed, key=self._rank.__getitem__)
        capacity = {p: self._capacity(p, now_s) for p in ordered}
        limits = [f.route.limit_bytes_per_s for f in flows]
        return max_min_shares([f.route.path for f in flows], capacity, limits)

    def _assign(self, flow: _Transfer, rate: float, bottleneck: Pipe | None, now_s: float) -> None:
        """Give the flow its rate and schedule when the network must look at it next."""
        flow.version += 1
        load = self._load
        for hop in flow.route.path:
            load[hop] = load.get(hop, 0.0) + rate - flow.rate_bytes_per_s
        flow.rate_bytes_per_s = rate
        flow.bottleneck = bottleneck
        varying = flow.route.varying
        if rate > 0 and bottleneck is not None and bottleneck.capacity.varying:
            flow.follows = bottleneck
            flow.fraction = rate / bottleneck.rate_bytes_per_s
            flow.caps = tuple(p for p in varying if p is not bottleneck)
        else:
            flow.follows, flow.fraction, flow.caps = None, 0.0, varying
        change_s = self._next_change_s(flow.route, now_s)
        if rate > 0:
            flow.stalled_since_s = None
            served_s = flow.served_at_s()
            flow.due_s, flow.due_kind = (
                (served_s, "served") if served_s <= change_s else (change_s, "change")
            )
        else:  # stalled behind a pipe that is down
            if flow.stalled_since_s is None:
                flow.stalled_since_s = now_s
            timeout_at_s = flow.stalled_since_s + self.outage_policy.timeout_s
            flow.due_s, flow.due_kind = (
                (timeout_at_s, "timeout") if timeout_at_s < change_s else (change_s, "change")
            )
        if flow.due_s < math.inf:
            heapq.heappush(self._due, (flow.due_s, flow.seq, flow.version, flow))

    @staticmethod
    def _next_change_s(route: _Route, now_s: float) -> float:
        """The first outage start or end on the route after now_s (inf if none)."""
        if not route.with_outages:
            return math.inf
        return min(p.next_change_s(now_s) for p in route.with_outages)
