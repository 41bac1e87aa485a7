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

The parts: `network.routes` (the pipes and the routes across them), `network.transfer`
(a transfer: its record, its route, the flow that serves it) and `network.sharing` (the
max-min fair bookkeeping and outage handling). This module plays them on the clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import simpy

from network.links import Jitter, Outage, OutagePolicy, Pipe, Trace
from network.overhead import TCP_IP, ProtocolOverhead
from network.routes import Routes
from network.sharing import Sharing
from network.transfer import Transfer, TransferRecord

DONE_BYTES = 1e-9  # a flow with this little left to serve is finished (float slack)
WIRE_SIZES_KEPT = 4096  # distinct payload sizes whose wire bytes are remembered

__all__ = ["DONE_BYTES", "Network", "Pipe", "TransferRecord"]


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
        keep_records: bool = True,
    ) -> None:
        if not isinstance(overhead, ProtocolOverhead):
            raise ValueError(f'"overhead" must be a ProtocolOverhead, got {overhead!r}')
        if not isinstance(outage_policy, OutagePolicy):
            raise ValueError(f'"outage_policy" must be an OutagePolicy, got {outage_policy!r}')
        self.env = env
        self.overhead = overhead
        # finished transfers, in completion order (empty with keep_records=False: a caller that
        # keeps what it needs itself, e.g. a fleet run's million transfers)
        self.records: list[TransferRecord] = []
        self.keep_records = keep_records
        self._routes = Routes()
        self._sharing = Sharing(env, self._routes.rank, outage_policy, self._finish)
        self._seq = itertools.count()
        self._waking = False  # a wake is queued at this instant
        self._alarm: simpy.Timeout | None = None  # pending, for the earliest due flow
        self._alarm_at_s = math.inf
        self._on_arrival = self._keep_record  # bound once, not once per transfer
        self._wire_bytes: dict[int, int] = {}  # payload bytes -> wire bytes (rounds repeat a few sizes)

    @property
    def outage_policy(self) -> OutagePolicy:
        """What a transfer does when a pipe on its path is down."""
        return self._sharing.policy

    @outage_policy.setter
    def outage_policy(self, policy: OutagePolicy) -> None:
        self._sharing.policy = policy

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
        return self._routes.add_pipe(name, rate_mbps, delay_s, trace, jitter, loss_rate, outages)

    # -- transferring ---------------------------------------------------------------------
    @property
    def active_flows(self) -> int:
        """Transfers still having bytes to serve (not those only propagating)."""
        return len(self._sharing.flows)

    def transfer(
        self, payload_bytes: int, path: Sequence[Pipe], *, label: str = ""
    ) -> simpy.Event:
        """Start sending `payload_bytes` along `path`; the event's value is a TransferRecord.

        The event fires when the last byte has arrived (or the transfer failed): yield it
        from a process, as any simpy event.
        """
        wire_bytes = self._wire_bytes.get(payload_bytes) if payload_bytes.__class__ is int else None
        if wire_bytes is None:
            wire_bytes = self.overhead.wire_bytes(payload_bytes)  # validates payload_bytes
            if len(self._wire_bytes) < WIRE_SIZES_KEPT:
                self._wire_bytes[payload_bytes] = wire_bytes
        route = self._routes.route(path, self.overhead)
        # jitter drawn when the transfer starts; without jitter, the route's fixed delay
        delay_s = self._routes.propagation_s(route) if route.jittered else route.delay_s
        flow = Transfer(
            self.env, self._on_arrival, next(self._seq), route, label, payload_bytes, wire_bytes,
            delay_s,
        )
        if wire_bytes <= 0:
            self._finish(flow, "ok")
        elif self._sharing.add(flow):  # admitted at once
            self._set_alarm()
        else:  # shared out by the wake
            self._wake()
        return flow

    def _keep_record(self, arrival: simpy.Event) -> None:
        """Add the arrived transfer's record to `records` (where they are kept)."""
        if self.keep_records:
            self.records.append(arrival.value)

    def _finish(self, flow: Transfer, status: str) -> None:
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
        self._sharing.share()
        self._set_alarm()

    def _on_alarm(self, alarm: simpy.Event) -> None:
        """The alarm for the earliest due flow; one that a sooner alarm replaced is ignored."""
        if alarm is self._alarm:
            self._alarm = None
            self._sharing.share()
            self._set_alarm()

    def _set_alarm(self) -> None:
        """Have a timeout pending for the earliest due flow (keep one that is not later)."""
        due_s = self._sharing.next_due_s()
        if due_s < math.inf and (self._alarm is None or self._alarm_at_s > due_s):
            self._alarm = self.env.timeout(max(0.0, due_s - self.env.now))
            self._alarm.callbacks.append(self._on_alarm)
            self._alarm_at_s = due_s
