"""The pipes of one network and the routes across them.

A route is what a transfer needs of its path that never changes (loss, TCP limit, delay,
which pipes vary or go down), worked out once per path and cached, since federated rounds
send along the same few paths again and again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from network.links import Jitter, Outage, Pipe, Trace, mathis_wire_bytes_per_s
from network.overhead import ProtocolOverhead
from network.transfer import Route


class Routes:
    """The pipes by name, in creation order, with their jitter streams and cached routes."""

    def __init__(self) -> None:
        self.rank: dict[Pipe, int] = {}  # creation order breaks ties in the sharing
        self._pipes: dict[str, Pipe] = {}
        self._jitter: dict[Pipe, np.random.Generator] = {}
        self._routes: dict[tuple[Pipe, ...], Route] = {}  # keyed by the pipes

    def add_pipe(
        self,
        name: str,
        rate_mbps: float | None,
        delay_s: float,
        trace: Trace | None,
        jitter: Jitter | None,
        loss_rate: float,
        outages: Sequence[Outage],
    ) -> Pipe:
        """A new pipe under a name not used yet (see `Network.pipe`)."""
        if name in self._pipes:
            raise ValueError(f'"name" must be unique, pipe {name!r} already exists')
        new_pipe = Pipe(name, rate_mbps, delay_s, trace, jitter, loss_rate, tuple(outages))
        self._pipes[name] = new_pipe
        self.rank[new_pipe] = len(self.rank)
        if jitter is not None:
            self._jitter[new_pipe] = jitter.stream(name)
        return new_pipe

    def route(self, path: Sequence[Pipe], overhead: ProtocolOverhead) -> Route:
        """The checked path and what never changes about it (cached: paths are reused)."""
        hops = tuple(path)
        try:
            route = self._routes.get(hops)
        except TypeError:  # an unhashable hop, so not a pipe: let the check say so
            route = None
        if route is None:
            route = _new_route(self._checked_path(hops), overhead)
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

    def propagation_s(self, route: Route) -> float:
        """One-way delay of the route: each pipe's delay plus a fresh jitter draw."""
        if not route.jittered:
            return route.delay_s
        total_s = 0.0
        for hop in route.path:
            extra_s = 0.0
            if hop.jitter is not None:
                extra_s = hop.jitter.draw_s(self._jitter[hop])
            total_s += max(0.0, hop.delay_s + extra_s)
        return total_s


def _new_route(path: tuple[Pipe, ...], overhead: ProtocolOverhead) -> Route:
    """The path's loss, TCP limit (for `overhead`'s packets), varying and outage pipes, delay."""
    loss_rate = 1.0 - math.prod(1.0 - p.loss_rate for p in path)
    rtt_s = 2 * sum(p.delay_s for p in path)
    packet_bytes = overhead.mss_bytes + overhead.header_bytes
    goodput_cap = mathis_wire_bytes_per_s(packet_bytes, rtt_s, loss_rate)
    delay_s = 0.0
    for hop in path:  # summed in path order, as the jittered delay is
        delay_s += hop.delay_s
    return Route(
        path=path,
        loss_rate=loss_rate,
        limit_bytes_per_s=goodput_cap / (1.0 - loss_rate),
        varying=tuple(p for p in path if p.capacity.varying),
        with_outages=tuple(p for p in path if p.outages),
        jittered=any(p.jitter is not None for p in path),
        delay_s=delay_s,
    )
