"""Random small networks: event-driven end times against a slow time-stepped reference."""

import random
from dataclasses import dataclass

import pytest
import simpy

from network import TCP_IP, Network

STEPS = 20_000  # time steps over the reference's horizon


@dataclass(frozen=True)
class Flow:
    start_s: float
    payload_bytes: int
    path: tuple[int, ...]  # indices into the pipe list


def _random_config(seed: int) -> tuple[list[tuple[float, float]], list[Flow]]:
    rng = random.Random(seed)
    pipes = [(rng.uniform(1, 20), rng.uniform(0, 0.05)) for _ in range(rng.randint(2, 4))]
    flows = [
        Flow(
            start_s=rng.choice([0.0, rng.uniform(0, 2)]),
            payload_bytes=rng.randint(50_000, 2_000_000),
            path=tuple(rng.sample(range(len(pipes)), rng.randint(1, len(pipes)))),
        )
        for _ in range(rng.randint(2, 6))
    ]
    return pipes, flows


def _simulate(pipes: list[tuple[float, float]], flows: list[Flow]) -> list[float]:
    env = simpy.Environment()
    net = Network(env, overhead=TCP_IP)
    pipe_objs = [net.pipe(f"p{i}", rate_mbps=r, delay_s=d) for i, (r, d) in enumerate(pipes)]

    def start(flow: Flow) -> object:
        yield env.timeout(flow.start_s)
        record = yield net.transfer(flow.payload_bytes, [pipe_objs[i] for i in flow.path])
        return record.end_s

    procs = [env.process(start(flow)) for flow in flows]
    env.run()
    return [p.value for p in procs]


def _reference_rates(paths: list[tuple[int, ...]], caps: list[float]) -> list[float]:
    """Raise a common water level; flows on a link that fills stop at that level."""
    rate: dict[int, float] = {}
    while len(rate) < len(paths):
        levels = {}
        for link, cap in enumerate(caps):
            users = [i for i, path in enumerate(paths) if link in path]
            rising = [i for i in users if i not in rate]
            if rising:
                levels[link] = (cap - sum(rate.get(i, 0.0) for i in users)) / len(rising)
        level = min(levels.values())
        for link, link_level in levels.items():
            if link_level <= level * (1 + 1e-12):
                rate.update({i: level for i, p in enumerate(paths) if link in p and i not in rate})
    return [rate[i] for i in range(len(paths))]


def _reference(pipes: list[tuple[float, float]], flows: list[Flow]) -> list[float]:
    """Step time by dt, serving each active flow rate * dt bytes per step."""
    caps = [rate_mbps * 1e6 / 8 for rate_mbps, _ in pipes]
    wire = [float(TCP_IP.wire_bytes(f.payload_bytes)) for f in flows]
    dt_s = (max(f.start_s for f in flows) + sum(wire) / min(caps)) / STEPS
    served_s: dict[int, float] = {}
    active: list[int] = []
    rates: list[float] = []
    step = 0
    while len(served_s) < len(flows):
        t_s = step * dt_s
        waiting = [i for i in range(len(flows)) if i not in active and i not in served_s]
        joining = [i for i in waiting if flows[i].start_s <= t_s]
        if joining:
            active += joining
            rates = _reference_rates([flows[i].path for i in active], caps)
        finished = []
        for i, rate in zip(active, rates):
            if wire[i] <= rate * dt_s:
                served_s[i] = t_s + wire[i] / rate
                finished.append(i)
            wire[i] -= rate * dt_s
        if finished:
            active = [i for i in active if i not in finished]
            rates = _reference_rates([flows[i].path for i in active], caps)
        step += 1
    return [served_s[i] + sum(pipes[j][1] for j in f.path) for i, f in enumerate(flows)]


@pytest.mark.parametrize("seed", range(12))
def test_end_times_match_time_stepped_reference(seed: int) -> None:
    pipes, flows = _random_config(seed)

    end_s = _simulate(pipes, flows)

    expected_s = _reference(pipes, flows)
    for got, want, flow in zip(end_s, expected_s, flows):
        assert got - flow.start_s == pytest.approx(want - flow.start_s, rel=0.01)
