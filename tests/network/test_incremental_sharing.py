"""The shortcuts (admitting a flow alone, keeping unchanged shares) change no end time."""

import random

import pytest
import simpy

from network import TCP_IP, Network, OpportunityTrace, Outage
from network.sharing import Sharing
from network.transfer import Transfer

TRACE = OpportunityTrace((0, 1, 1, 3, 4, 4, 4, 9, 12, 12, 15))  # bursty, period 15 ms


def _scenario(seed: int, *, traces: bool) -> list[tuple[float, str]]:
    """Random star with a few cells: (end_s, status) of every transfer, in start order."""
    rng = random.Random(seed)
    env = simpy.Environment()
    net = Network(env, overhead=TCP_IP)
    server = net.pipe("server", rate_mbps=rng.uniform(5, 60), delay_s=0.005)
    cells = [net.pipe(f"cell{i}", rate_mbps=rng.uniform(5, 30)) for i in range(2)]
    procs = []
    for i in range(rng.randint(4, 12)):
        own_trace = traces and rng.random() < 0.5
        outages = [Outage(0.05 + rng.random(), 1.5 + rng.random())] if rng.random() < 0.3 else []
        up = net.pipe(
            f"c{i}.up",
            rate_mbps=None if own_trace else rng.uniform(0.5, 40),
            trace=TRACE if own_trace else None,
            delay_s=rng.uniform(0, 0.03),
            loss_rate=rng.choice([0.0, 0.0, 0.01]),
            outages=outages,
        )
        path = [up, rng.choice(cells), server] if rng.random() < 0.5 else [up, server]
        procs.append(_start_at(env, net, rng.uniform(0, 2), rng.randint(10_000, 900_000), path))
    env.run()
    return [(p.value.end_s, p.value.status) for p in procs]


def _start_at(env: simpy.Environment, net: Network, at_s: float, n: int, path: list) -> object:
    def later() -> object:
        yield env.timeout(at_s)
        return (yield net.transfer(n, path))

    return env.process(later())


@pytest.mark.parametrize("seed", range(15))
def test_admitting_alone_matches_reallocating_all(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _scenario(seed, traces=True)
    monkeypatch.setattr(Sharing, "_join", lambda self, flow: False)

    slow = _scenario(seed, traces=True)

    assert [s for _, s in fast] == [s for _, s in slow]
    assert [t for t, _ in fast] == pytest.approx([t for t, _ in slow], rel=1e-9)


@pytest.mark.parametrize("seed", range(15))
def test_keeping_shares_matches_retiming_every_flow(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _scenario(seed, traces=False)
    monkeypatch.setattr(Sharing, "_join", lambda self, flow: False)
    monkeypatch.setattr(Transfer, "keeps", lambda self, share, now_s: False)

    slow = _scenario(seed, traces=False)

    assert [s for _, s in fast] == [s for _, s in slow]
    assert [t for t, _ in fast] == pytest.approx([t for t, _ in slow], rel=1e-9)
