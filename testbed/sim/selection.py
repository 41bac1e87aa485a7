"""Who takes part: each client's availability schedule, its offline periods as link outages,
the seeded choice among the clients online now, and who drops out."""

from __future__ import annotations

import math

import numpy as np
import simpy

from network import Outage
from testbed.config.availability import ALWAYS, FleetSchedules, Schedule, diurnal, load_fedscale
from testbed.config.fleet import FleetClient
from testbed.config.scenario import AvailabilityConfig, Scenario

AVAILABILITY_HORIZON_S = 90 * 86400.0  # offline periods become link outages up to this simulated time


def schedules(cfg: AvailabilityConfig, n_clients: int, seed: int) -> list[Schedule]:
    if cfg.kind == "always":
        return [ALWAYS] * n_clients
    if cfg.kind == "diurnal":
        return diurnal(n_clients, period_s=cfg.period_s, on_fraction=cfg.on_fraction, seed=seed)
    return load_fedscale(cfg.path, n_clients)


def link_outages(scenario: Scenario, clients: list[FleetClient], plans: list[Schedule]) -> dict[int, list[Outage]]:
    """Per client: the scenario's link outages plus its offline periods, merged."""
    out = {}
    for c in clients:
        offline = plans[c.client_id].offline_windows(AVAILABILITY_HORIZON_S)  # sorted, apart
        if not scenario.network.outages:  # nothing to merge them with (a fleet's 10,000 schedules)
            out[c.client_id] = [Outage(t1, t2) for t1, t2 in offline if t2 > t1]
            continue
        windows = sorted([*scenario.network.outages, *offline])
        merged: list[list[float]] = []
        for t1, t2 in windows:
            if merged and t1 <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], t2)
            else:
                merged.append([t1, t2])
        out[c.client_id] = [Outage(t1, t2) for t1, t2 in merged if t2 > t1]
    return out


class Selection:
    """Seeded choices among the clients online on the simulated clock."""

    def __init__(self, scenario: Scenario, env: simpy.Environment, clients: list[FleetClient],
                 plans: list[Schedule]) -> None:
        self.scenario = scenario
        self.env = env
        self.clients = clients
        self.schedules = plans
        self.fleet_schedules = FleetSchedules(plans)

    def select(self, rnd: int, k: int) -> list[int]:
        """A seeded choice of k clients among those online now (fewer when fewer are online).
        With nobody online the clock first advances to the next time someone comes online."""
        online = self.online_now()
        rng = np.random.default_rng([self.scenario.seed, rnd])
        k = min(k, len(online))
        if len(online) == len(self.clients):
            return sorted(int(c) for c in rng.choice(len(self.clients), size=k, replace=False))
        return sorted(int(c) for c in rng.choice(np.array(online), size=k, replace=False))

    def online(self) -> list[int]:
        """The clients online now (the clock does not move)."""
        return np.flatnonzero(self.fleet_schedules.online(self.env.now)).tolist()

    def online_now(self) -> list[int]:
        """The clients online now; with nobody online, first advance to the next time someone is."""
        online = self.online()
        if online:
            return online
        back_s = min(s.next_online(self.env.now) for s in self.schedules)
        if math.isinf(back_s):
            raise RuntimeError(f"no client is online at {self.env.now:.0f} s or later: the availability ends")
        self.env.run(until=back_s)
        return self.online_now()

    def offline_at(self, cid: int) -> float:
        """When client `cid`'s current availability window ends."""
        return self.schedules[cid].offline_at(self.env.now)

    def dropouts(self, key: int, selected: list[int]) -> set[int]:
        """The selected clients that drop out after their first work (seeded by `key`)."""
        p = self.scenario.availability.dropout
        if not p:
            return set()
        rng = np.random.default_rng([self.scenario.seed, key, 0xD0])
        return {cid for cid, u in zip(selected, rng.random(len(selected)), strict=True) if u < p}
