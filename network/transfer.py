"""One transfer through the network: its record, its route, and the flow that serves it.

A `Transfer` is at once the simpy event `Network.transfer` returns and the fluid flow the
network shares the pipes among; it knows how to time itself under the allocation it is
given. Which allocation that is, is the sharing's business (`network.sharing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import simpy
from simpy.events import NORMAL

from network.fairness import Share
from network.links import EPS_S, Pipe


class TransferRecord(NamedTuple):
    """One finished transfer, in simulated seconds (immutable; a named tuple, not a frozen
    dataclass: a fleet run makes millions, and a tuple is built in a third of the time)."""

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
class Route:
    """What a transfer needs of its path that never changes: worked out once per path."""

    path: tuple[Pipe, ...]
    loss_rate: float  # 1 - prod(1 - p_i)
    limit_bytes_per_s: float  # loss-limited TCP rate in bytes pushed (inf if none)
    varying: tuple[Pipe, ...]  # pipes whose capacity follows a trace
    with_outages: tuple[Pipe, ...]  # pipes that go down at some time
    jittered: bool  # some pipe draws extra delay per transfer
    delay_s: float  # the one-way delay without jitter


class Transfer(simpy.Event):
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
        "version",  # bumped at each allocation; older due entries are stale
    )

    def __init__(
        self,
        env: simpy.Environment,
        on_arrival: Callable[[simpy.Event], None],
        seq: int,
        route: Route,
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

    # -- the allocation ---------------------------------------------------------------------
    def keeps(self, share: Share[Pipe], now_s: float) -> bool:
        """Whether the flow may keep its allocation and due time: same share, due later."""
        return (
            self.version > 0
            and share.rate == self.rate_bytes_per_s
            and share.bottleneck is self.bottleneck
            and self.due_s > now_s + EPS_S
        )

    def assign(self, rate: float, bottleneck: Pipe | None, now_s: float, timeout_s: float) -> None:
        """Hold `rate` from now on, and work out when the network must look at the flow next.

        Under a varying bottleneck it gets a fixed fraction of that pipe's service, else a
        fixed rate. It is due when served or at the route's next outage start or end. A flow
        with no rate is stalled behind a pipe that is down: it times out `timeout_s` after its
        stall began unless an outage change comes first. (One method, not one per step: it
        runs for every flow re-timed.) The caller has settled the old allocation.
        """
        self.version += 1
        self.rate_bytes_per_s = rate
        self.bottleneck = bottleneck
        route = self.route
        if rate > 0 and bottleneck is not None and bottleneck.capacity.varying:
            self.follows = bottleneck
            self.fraction = rate / bottleneck.rate_bytes_per_s
            self.caps = tuple(p for p in route.varying if p is not bottleneck)
        else:
            self.follows, self.fraction, self.caps = None, 0.0, route.varying
        change_s = math.inf
        if route.with_outages:
            change_s = min(p.next_change_s(now_s) for p in route.with_outages)
        if rate > 0:
            self.stalled_since_s = None
            served_s = self.served_at_s()
            self.due_s, self.due_kind = (
                (served_s, "served") if served_s <= change_s else (change_s, "change")
            )
            return
        if self.stalled_since_s is None:
            self.stalled_since_s = now_s
        timeout_at_s = self.stalled_since_s + timeout_s
        self.due_s, self.due_kind = (
            (timeout_at_s, "timeout") if timeout_at_s < change_s else (change_s, "change")
        )

    # -- its progress -----------------------------------------------------------------------
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
