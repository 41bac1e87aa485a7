"""What a round is made of while it runs: each client's timeline and the round's state."""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from testbed.protocol import ClientCall, Failure, FitIns, FitRes
from testbed.results.energy import Exchange

SERVER = -1  # the `client` column of server-side rows


@dataclass(slots=True)
class ClientTimeline:
    """What one client did in one round, in simulated seconds (slots: a fleet round makes tens of
    thousands, and made half as fast without)."""

    start_s: float = 0.0
    end_s: float = 0.0
    device_s: float = 0.0
    host_s: float = 0.0
    factor: float = float("nan")
    bound: str = ""
    bytes_down: int = 0
    bytes_up: int = 0
    wire_down: int = 0
    wire_up: int = 0
    peak_rss_bytes: int = 0
    host: str = ""  # the machine that computed its calls, where the backend says (else this host)
    exchanges: list[Exchange] = field(default_factory=list)  # its transfers, for the radio energy
    arrived: bool = False
    offline_at_s: float = math.inf  # when the client's availability window ends
    span_start_s: float | None = None  # the compute span in progress: its start, host and device seconds (cut_at)
    span_host_s: float = 0.0
    span_device_s: float = 0.0

    def cut_at(self, t_s: float) -> None:
        """The round closed (or the run ended) at `t_s` with the client still at work, and its row is
        written now. A client computing then finishes the span it is in (it learns of the close at
        its next action): the row counts that span whole, the wasted work it is, and ends where the
        span ends. Otherwise the row ends at `t_s`. Its later actions are not the round's."""
        if self.span_start_s is not None:
            self.device_s += self.span_device_s
            self.host_s += self.span_host_s
            self.end_s = self.span_start_s + self.span_device_s
            self.span_start_s = None
        else:
            self.end_s = t_s


@dataclass
class RoundContext:
    rnd: int
    ins: dict[int, FitIns]
    kill: set[int]  # clients whose first call this round is killed (fault injection)
    prefetched: dict[int, tuple[ClientCall, Future]] = field(default_factory=dict)
    results: dict[int, FitRes] = field(default_factory=dict)
    failures: dict[int, Failure] = field(default_factory=dict)
    timelines: dict[int, ClientTimeline] = field(default_factory=dict)
    server_host_s: float = 0.0  # host seconds of server calls made during the round
    enough: Any = None  # simpy event: the round has the arrivals it keeps
    dropouts: set[int] = field(default_factory=set)  # clients that drop out after their first work
    keep: int | None = None  # deadline policy: the round closes at this many arrivals
    closed: bool = False  # no more arrivals are kept (the rest is wasted work)
    discarded: set[int] = field(default_factory=set)  # still working when the round closed
