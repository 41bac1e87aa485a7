"""Outages, random loss and jitter: their effect on transfer times, checked by hand."""

import math

import pytest
import simpy
from flow_helpers import start_at

from network import (
    NO_OVERHEAD,
    TCP_IP,
    Jitter,
    Network,
    OpportunityTrace,
    Outage,
    OutagePolicy,
    Pipe,
    ProtocolOverhead,
    TransferRecord,
)

EVERY_MS = OpportunityTrace(tuple(range(1, 11)))  # one packet per ms, period 10 ms




def _one_link(
    payload_bytes: int,
    starts_s: list[float],
    *,
    policy: OutagePolicy = OutagePolicy(),
    overhead: ProtocolOverhead = NO_OVERHEAD,
    **pipe: object,
) -> list[TransferRecord]:
    env = simpy.Environment()
    net = Network(env, overhead=overhead, outage_policy=policy)
    link = net.pipe("link", **pipe)  # type: ignore[arg-type]
    procs = [start_at(env, net, s, payload_bytes, [link]) for s in starts_s]
    env.run()
    return [p.value for p in procs]


# -- outages ----------------------------------------------------------------------------
def test_transfer_stalls_through_an_outage_and_resumes() -> None:
    # 1.25 MB at 10 Mbit/s needs 1 s; the link is down 0.3..0.8 s: served at 1.5 s.
    (record,) = _one_link(
        1_250_000, [0.0], rate_mbps=10, delay_s=0.01, outages=[Outage(0.3, 0.8)]
    )

    assert record.status == "ok"
    assert record.end_s == pytest.approx(1.51, rel=1e-9)


def test_trace_opportunities_during_an_outage_are_lost() -> None:
    # 10 packets from 0: those at 1, 2, 3 ms go; 4, 5, 6 fall in the outage; then 7..13.
    (record,) = _one_link(15_000, [0.0], trace=EVERY_MS, outages=[Outage(0.003, 0.006)])

    assert record.end_s == pytest.approx(0.013, abs=1e-12)


def test_transfer_started_during_an_outage_waits_for_its_end() -> None:
    (record,) = _one_link(125_000, [0.4], rate_mbps=10, outages=[Outage(0.3, 0.8)])

    assert (record.start_s, record.status) == (0.4, "ok")
    assert record.end_s == pytest.approx(0.9, rel=1e-9)


def test_stall_longer_than_the_timeout_fails_the_transfer() -> None:
    policy = OutagePolicy(action="stall", timeout_s=0.5)

    (record,) = _one_link(
        1_250_000, [0.0], policy=policy, rate_mbps=10, delay_s=0.01, outages=[Outage(0.3, 2.0)]
    )

    assert record.status == "timeout"
    assert record.end_s == pytest.approx(0.8, rel=1e-9)  # stall start + timeout, no delay


@pytest.mark.parametrize("outage_end_s", [0.6, 0.8])
def test_stall_within_the_timeout_resumes(outage_end_s: float) -> None:
    policy = OutagePolicy(action="stall", timeout_s=0.5)

    (record,) = _one_link(
        1_250_000, [0.0], policy=policy, rate_mbps=10, outages=[Outage(0.3, outage_end_s)]
    )

    assert record.status == "ok"
    assert record.end_s == pytest.approx(1.0 + outage_end_s - 0.3, rel=1e-9)


def test_fail_policy_ends_transfers_caught_by_the_outage() -> None:
    policy = OutagePolicy(action="fail")

    in_flight, started_during, started_after = _one_link(
        1_250_000, [0.0, 0.5, 0.9], policy=policy, rate_mbps=10, outages=[Outage(0.3, 0.8)]
    )

    assert (in_flight.status, in_flight.end_s) == ("failed", pytest.approx(0.3, rel=1e-9))
    assert (started_during.status, started_during.end_s) == ("failed", 0.5)
    assert (started_after.status, started_after.end_s) == ("ok", pytest.approx(1.9, rel=1e-9))


def test_outage_on_one_access_link_frees_the_shared_server_for_the_other() -> None:
    # Server 10 Mbit/s shared; A's own link is down 0.2..0.6 s. Each sends 1.25 MB.
    # 0-0.2: 625 kB/s each. 0.2-0.6: B alone at 1.25 MB/s (625 kB left at 0.6).
    # 0.6-1.6: 625 kB/s each, B done. A has 500 kB left at 1.6: alone, 0.4 s -> 2.0.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    server = net.pipe("server.in", rate_mbps=10)
    a_up = net.pipe("a.up", rate_mbps=100, outages=[Outage(0.2, 0.6)])
    b_up = net.pipe("b.up", rate_mbps=100)

    a = net.transfer(1_250_000, [a_up, server])
    b = net.transfer(1_250_000, [b_up, server])
    env.run()

    assert b.value.end_s == pytest.approx(1.6, rel=1e-9)
    assert a.value.end_s == pytest.approx(2.0, rel=1e-9)


# -- loss -------------------------------------------------------------------------------
def test_loss_without_rtt_costs_retransmissions_only() -> None:
    # 1 MB over 8 Mbit/s with 20% loss: 1.25 MB go on the wire (each packet 1/0.8 times).
    (record,) = _one_link(1_000_000, [0.0], rate_mbps=8, loss_rate=0.2)

    assert record.wire_bytes == 1_000_000  # reported without retransmissions
    assert record.end_s == pytest.approx(1.25, rel=1e-9)


def test_loss_with_rtt_caps_the_rate_as_mathis_says() -> None:
    # 100 Mbit/s, RTT 50 ms, 1% loss: TCP's cap 1500 B / 0.05 s * sqrt(3/2) / 0.1 ~ 2.9 Mbit/s.
    (record,) = _one_link(1_000_000, [0.0], overhead=TCP_IP, rate_mbps=100, delay_s=0.025,
                          loss_rate=0.01)

    cap_bytes_per_s = 1500 / 0.05 * math.sqrt(1.5) / math.sqrt(0.01)
    assert record.end_s == pytest.approx(1_027_400 / cap_bytes_per_s + 0.025, rel=1e-9)


def test_slight_loss_on_a_slow_link_leaves_the_link_as_the_limit() -> None:
    # Cap 1500/0.05 * 1.22 / 0.01 ~ 29 Mbit/s > 1 Mbit/s: only the retransmissions count.
    (record,) = _one_link(125_000, [0.0], rate_mbps=1, delay_s=0.025, loss_rate=1e-4)

    assert record.end_s == pytest.approx(1 / (1 - 1e-4) + 0.025, rel=1e-9)


def test_loss_on_a_trace_needs_more_opportunities() -> None:
    # 10 packets at 50% loss: 20 opportunities.
    (record,) = _one_link(15_000, [0.0], trace=EVERY_MS, loss_rate=0.5)

    assert record.end_s == pytest.approx(0.020, abs=1e-12)


def test_losses_on_a_path_combine() -> None:
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    path = [net.pipe("a", rate_mbps=8, loss_rate=0.1), net.pipe("b", rate_mbps=80, loss_rate=0.2)]

    proc = net.transfer(1_000_000, path)
    env.run()

    assert proc.value.end_s == pytest.approx(1 / (0.9 * 0.8), rel=1e-9)


# -- jitter -----------------------------------------------------------------------------
def _delays_s(
    jitter: Jitter, n: int = 200, *, delay_s: float = 0.05, other: bool = False
) -> list[float]:
    """One-way delays of n empty transfers on a jittered pipe (plus, optionally, another)."""
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    link = net.pipe("link", rate_mbps=1, delay_s=delay_s, jitter=jitter)
    if other:
        side = net.pipe("side", rate_mbps=1, delay_s=delay_s, jitter=Jitter("normal", 0.01, seed=9))
    procs = []
    for _ in range(n):
        procs.append(net.transfer(0, [link]))
        if other:
            net.transfer(0, [side])
    env.run()
    return [p.value.duration_s for p in procs]


def test_jitter_is_seeded_and_reproducible() -> None:
    first = _delays_s(Jitter("uniform", 0.02, seed=3))
    again = _delays_s(Jitter("uniform", 0.02, seed=3))
    other_seed = _delays_s(Jitter("uniform", 0.02, seed=4))

    assert first == again
    assert first != other_seed
    assert all(0.05 <= d <= 0.07 for d in first)
    assert len(set(first)) == len(first)


def test_jitter_draws_of_a_pipe_ignore_other_pipes() -> None:
    alone = _delays_s(Jitter("exponential", 0.01, seed=5))
    beside_another = _delays_s(Jitter("exponential", 0.01, seed=5), other=True)

    assert alone == beside_another


def test_exponential_jitter_has_its_mean() -> None:
    delays = _delays_s(Jitter("exponential", 0.01, seed=1), n=4000)

    assert sum(delays) / len(delays) == pytest.approx(0.06, rel=0.02)


def test_normal_jitter_never_makes_the_delay_negative() -> None:
    delays = _delays_s(Jitter("normal", 0.01, seed=2), delay_s=0.001)

    assert min(delays) == 0.0
    assert max(delays) > 0.01


# -- validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_mbps": 1.0, "trace": EVERY_MS}, 'exactly one of "rate_mbps" and "trace"'),
        ({}, 'exactly one of "rate_mbps" and "trace"'),
        ({"rate_mbps": 1.0, "loss_rate": 1.0}, '"loss_rate" must be < 1'),
        ({"rate_mbps": 1.0, "loss_rate": -0.1}, '"loss_rate" must be >= 0'),
        ({"rate_mbps": 1.0, "outages": (Outage(0, 2), Outage(1, 3))}, '"outages" must be sorted'),
        ({"trace": [1, 2]}, '"trace" must be an OpportunityTrace, RateTrace or ShiftedTrace'),
        ({"rate_mbps": 1.0, "jitter": 0.01}, '"jitter" must be a Jitter'),
    ],
)
def test_bad_pipe_parts_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pipe("up", **kwargs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Outage(5, 3), '"end_s" must be > "start_s"'),
        (lambda: Outage(-1, 3), '"start_s" must be >= 0'),
        (lambda: OutagePolicy(action="drop"), '"action" must be stall or fail'),  # type: ignore
        (lambda: OutagePolicy(timeout_s=0), '"timeout_s" must be > 0'),
        (lambda: Jitter("pareto", 0.1), '"distribution" must be'),  # type: ignore[arg-type]
        (lambda: Jitter("uniform", -0.1), '"scale_s" must be >= 0'),
        (lambda: Network(simpy.Environment(), outage_policy="stall"), '"outage_policy"'),
    ],
)
def test_bad_parts_name_their_field(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]
