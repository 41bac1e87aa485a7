"""A fluid-flow network on the simpy clock: pipes shared max-min fairly by flows.

One controller process keeps the flows' shares: it wakes when a flow starts, when the
earliest flow is due (served, an outage on its path begins or ends, a stall times out), and
reallocates. A new flow whose tightest constraint is its own (a pipe it crosses alone, or
its loss-limited rate) is admitted without touching the others; otherwise every share is
recomputed, and only the flows whose share moved are re-timed.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import simpy

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


@dataclass(frozen=True)
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
class _PathInfo:
    """What a flow needs of its path that never changes: worked out once per path."""

    loss_rate: float  # 1 - prod(1 - p_i)
    limit_bytes_per_s: float  # loss-limited TCP rate in bytes pushed (inf if none)
    varying: tuple[Pipe, ...]  # pipes whose capacity follows a trace
    with_outages: tuple[Pipe, ...]  # pipes that go down at some time


@dataclass(eq=False)
class _Flow:
    """The bandwidth-holding part of a transfer, and its allocation since `since_s`.

    It progresses at a fixed rate, or, when a varying pipe is its bottleneck, as a fixed
    fraction of that pipe's service; either way never faster than the full service of the
    other varying pipes on its path (`caps`).
    """

    seq: int  # start order, breaks ties
    path: tuple[Pipe, ...]
    info: _PathInfo
    remaining_bytes: float  # still to serve at since_s, retransmissions included
    limit_bytes_per_s: float  # its own cap (loss-limited TCP), inf if none
    served: simpy.Event  # succeeds with the status when the flow ends
    since_s: float
    rate_bytes_per_s: float = 0.0
    bottleneck: Pipe | None = None  # where max-min froze it; None: its own limit
    follows: Pipe | None = None  # the varying bottleneck whose service it shares
    fraction: float = 0.0  # its share of `follows`
    caps: tuple[Pipe, ...] = ()
    stalled_since_s: float | None = None
    due_s: float = math.inf  # when the controller must next look at it
    due_kind: str = "change"  # served, change (of an outage) or timeout
    version: int = 0  # bumped at each allocation; older heap entries are stale

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
        self._flows: dict[_Flow, None] = {}  # active flows, in start order
        self._due: list[tuple[float, int, int, _Flow]] = []  # (due_s, seq, version, flow)
        self._seq = itertools.count()
        self._joining: deque[_Flow] = deque()  # started, not yet given a share
        self._full = False  # a change that may move every share: reallocate all
        self._users: dict[Pipe, int] = {}  # active flows crossing each pipe
        self._load: dict[Pipe, float] = {}  # sum of their rates, bytes/s
        self._changed = env.event()  # wakes the controller when the set of flows changes
        self._wake: simpy.Timeout | None = None  # the controller's pending alarm
        self._wake_at_s = math.inf
        self._controller: simpy.Process | None = None
        self._paths: dict[tuple[Pipe, ...], _PathInfo] = {}  # cache, keyed by the pipes

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
    ) -> simpy.Process:
        """Start sending `payload_bytes` along `path`; the process's value is a TransferRecord."""
        wire_bytes = self.overhead.wire_bytes(payload_bytes)  # validates payload_bytes
        hops = self._checked_path(path)
        start_s = float(self.env.now)
        return self.env.process(self.transmit(payload_bytes, wire_bytes, hops, label, start_s))

    def transmit(
        self,
        payload_bytes: int,
        wire_bytes: int,
        path: tuple[Pipe, ...],
        label: str,
        start_s: float,
    ) -> Generator[simpy.Event, object, TransferRecord]:
        """Serve the wire bytes at the fair rate, then propagate them along the path."""
        delay_s = self._propagation_s(path)  # jitter drawn when the transfer starts
        status = "ok"
        if wire_bytes > 0:
            status = str((yield self._start_flow(wire_bytes, path)))
        if status == "ok":
            yield self.env.timeout(delay_s)
        record = TransferRecord(
            label, start_s, float(self.env.now), payload_bytes, wire_bytes, status
        )
        self.records.append(record)
        return record

    def _checked_path(self, path: Sequence[Pipe]) -> tuple[Pipe, ...]:
        """The path as a tuple, once every pipe is known here and appears once."""
        hops = tuple(path)
        if not hops:
            raise ValueError('"path" must cross at least one pipe')
        for hop in hops:
            if not isinstance(hop, Pipe) or self._pipes.get(hop.name) is not hop:
                raise ValueError(f'"path" must hold pipes of this network, got {hop!r}')
        if len(set(hops)) != len(hops):
            raise ValueError(f'"path" must cross each pipe once, got {[p.name for p in hops]}')
        return hops

    def _propagation_s(self, path: tuple[Pipe, ...]) -> float:
        """One-way delay of the path: each pipe's delay plus a fresh jitter draw."""
        total_s = 0.0
        for hop in path:
            extra_s = 0.0
            if hop.jitter is not None:
                extra_s = hop.jitter.draw_s(self._jitter[hop])
            total_s += max(0.0, hop.delay_s + extra_s)
        return total_s

    def _start_flow(self, wire_bytes: int, path: tuple[Pipe, ...]) -> simpy.Event:
        """Add a flow to the shared pipes; the returned event fires when it ends."""
        info = self._path_info(path)
        flow = _Flow(
            seq=next(self._seq),
            path=path,
            info=info,
            remaining_bytes=wire_bytes / (1.0 - info.loss_rate),  # each packet sent 1/(1-p) times
            limit_bytes_per_s=info.limit_bytes_per_s,
            served=self.env.event(),
            since_s=float(self.env.now),
        )
        self._flows[flow] = None
        users = self._users
        for hop in path:
            users[hop] = users.get(hop, 0) + 1
        self._joining.append(flow)
        self._notify()
        return flow.served

    def _path_info(self, path: tuple[Pipe, ...]) -> _PathInfo:
        """The path's loss, TCP limit, varying and outage pipes (cached: paths are reused)."""
        info = self._paths.get(path)
        if info is None:
            loss_rate = 1.0 - math.prod(1.0 - p.loss_rate for p in path)
            rtt_s = 2 * sum(p.delay_s for p in path)
            packet_bytes = self.overhead.mss_bytes + self.overhead.header_bytes
            goodput_cap = mathis_wire_bytes_per_s(packet_bytes, rtt_s, loss_rate)
            info = _PathInfo(
                loss_rate=loss_rate,
                limit_bytes_per_s=goodput_cap / (1.0 - loss_rate),
                varying=tuple(p for p in path if p.capacity.varying),
                with_outages=tuple(p for p in path if p.outages),
            )
            self._paths[path] = info
        return info

    # -- the controller -------------------------------------------------------------------
    def _notify(self) -> None:
        """Tell the controller the set of flows changed; start it on first use."""
        if self._controller is None:
            self._controller = self.env.process(self._share())
        if not self._changed.triggered:
            self._changed.succeed()

    def _share(self) -> Generator[simpy.Event, object, None]:
        """Share the pipes: settle what is due, admit new flows, sleep until the next."""
        while True:
            self._settle_due()
            while self._joining and not self._full:
                self._full = not self._join(self._joining.popleft())
            if self._full:
                self._reallocate()
            yield self._next_wakeup()

    def _settle_due(self) -> None:
        """End the flows served or timed out by now; note outage changes on flows' paths."""
        now_s = self.env.now
        while self._due and self._due[0][0] <= now_s + EPS_S:
            _, _, version, flow = heapq.heappop(self._due)
            if flow not in self._flows or version != flow.version:
                continue  # stale entry
            if flow.due_kind == "change":
                self._full = True
            else:
                self._end(flow, "ok" if flow.due_kind == "served" else "timeout")

    def _end(self, flow: _Flow, status: str) -> None:
        """Remove the flow and wake its transfer; reallocate all if others gain from it.

        Only a pipe that was full can hand the freed rate to flows bottlenecked on it.
        """
        del self._flows[flow]
        for hop in flow.path:
            self._users[hop] -= 1
            if flow.rate_bytes_per_s > 0 and self._users[hop] > 0 and self._is_full(hop):
                self._full = True
            if self._users[hop] == 0:
                self._load[hop] = 0.0  # no float residue left behind
            else:
                self._load[hop] = self._load.get(hop, 0.0) - flow.rate_bytes_per_s
        if status == "ok":
            flow.remaining_bytes = 0.0
        flow.served.succeed(status)

    def _is_full(self, pipe: Pipe) -> bool:
        """Whether the flows' rates fill the pipe (within float slack)."""
        capacity = self._capacity(pipe, self.env.now)
        return capacity - self._load.get(pipe, 0.0) <= 1e-9 * capacity

    def _capacity(self, pipe: Pipe, now_s: float) -> float:
        """What the sharing may hand out on the pipe now: 0 while it is down."""
        return 0.0 if pipe.is_down(now_s) else pipe.rate_bytes_per_s

    def _join(self, flow: _Flow) -> bool:
        """Admit a flow without touching the others, if that is max-min fair; else False.

        It is when the flow's tightest constraint (capacity left on each pipe, or its own
        limit) is one no other flow shares: a pipe it crosses alone, or its limit.
        """
        if flow not in self._flows:
            return True
        now_s = float(self.env.now)
        rate, own = flow.limit_bytes_per_s, None
        tight_shared = math.inf
        for hop in flow.path:
            left = self._capacity(hop, now_s) - self._load.get(hop, 0.0)
            if self._users[hop] > 1:
                tight_shared = min(tight_shared, left)
            elif left <= rate:
                rate, own = left, hop
        if not (0 < rate <= tight_shared) or (own is None and rate == math.inf):
            return False
        self._assign(flow, Share(rate, own), now_s)
        return True

    def _reallocate(self) -> None:
        """Drop the failed flows, share the pipes anew; re-time each flow whose share moved."""
        self._joining.clear()
        now_s = float(self.env.now)
        if self.outage_policy.action == "fail":
            for flow in list(self._flows):
                if any(p.is_down(now_s) for p in flow.path):
                    self._end(flow, "failed")
        self._full = False
        flows = list(self._flows)
        self._load = {}
        for flow, share in zip(flows, self._shares(flows, now_s)):
            if self._keeps(flow, share, now_s):
                for hop in flow.path:
                    self._load[hop] = self._load.get(hop, 0.0) + share.rate
                continue
            flow.remaining_bytes = max(0.0, flow.remaining_bytes - flow.served_bytes(now_s))
            flow.since_s = now_s
            flow.rate_bytes_per_s = 0.0
            self._assign(flow, share, now_s)
        if len(self._due) > 2 * len(flows) + 64:  # drop the stale entries
            self._due = [(f.due_s, f.seq, f.version, f) for f in flows if f.due_s < math.inf]
            heapq.heapify(self._due)

    @staticmethod
    def _keeps(flow: _Flow, share: Share[Pipe], now_s: float) -> bool:
        """Whether the flow may keep its allocation and due time: same share, due later."""
        return (
            flow.version > 0
            and share.rate == flow.rate_bytes_per_s
            and share.bottleneck is flow.bottleneck
            and flow.due_s > now_s + EPS_S
        )

    def _shares(self, flows: list[_Flow], now_s: float) -> list[Share[Pipe]]:
        """Max-min fair shares over the pipes the flows cross (a pipe that is down has 0)."""
        crossed = {pipe for flow in flows for pipe in flow.path}
        ordered = sorted(crossed, key=self._rank.__getitem__)
        capacity = {p: self._capacity(p, now_s) for p in ordered}
        limits = [f.limit_bytes_per_s for f in flows]
        return max_min_shares([f.path for f in flows], capacity, limits)

    def _assign(self, flow: _Flow, share: Share[Pipe], now_s: float) -> None:
        """Give the flow its share and schedule when the controller must look at it next."""
        flow.version += 1
        for hop in flow.path:
            self._load[hop] = self._load.get(hop, 0.0) + share.rate - flow.rate_bytes_per_s
        flow.rate_bytes_per_s = share.rate
        flow.bottleneck = share.bottleneck
        varying = flow.info.varying
        bottleneck = share.bottleneck
        if share.rate > 0 and bottleneck is not None and bottleneck.capacity.varying:
            flow.follows = bottleneck
            flow.fraction = share.rate / bottleneck.rate_bytes_per_s
            flow.caps = tuple(p for p in varying if p is not bottleneck)
        else:
            flow.follows, flow.fraction, flow.caps = None, 0.0, varying
        change_s = min((p.next_change_s(now_s) for p in flow.info.with_outages), default=math.inf)
        if share.rate > 0:
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

    def _next_wakeup(self) -> simpy.Event:
        """The event the controller sleeps on: a change of flows or the next due time."""
        if self._changed.triggered:
            self._changed = self.env.event()
        while self._due and self._is_stale(self._due[0]):
            heapq.heappop(self._due)
        if not self._due:
            return self._changed
        return self._changed | self._alarm(self._due[0][0])

    def _is_stale(self, entry: tuple[float, int, int, _Flow]) -> bool:
        _, _, version, flow = entry
        return flow not in self._flows or version != flow.version

    def _alarm(self, due_s: float) -> simpy.Event:
        """A timeout at `due_s`; reuse a pending one if it is not later."""
        pending = self._wake is not None and not self._wake.processed
        if not (pending and self._wake_at_s <= due_s):
            self._wake = self.env.timeout(max(0.0, due_s - self.env.now))
            self._wake_at_s = due_s
        assert self._wake is not None
        return self._wake
