"""Transfers on trace pipes: mahimahi replay semantics and sharing among flows."""

import math
from pathlib import Path

import pytest
import simpy
from flow_helpers import start_at

from network import (
    NO_OVERHEAD,
    TCP_IP,
    Network,
    OpportunityTrace,
    RateTrace,
    ShiftedTrace,
    TransferRecord,
    load_mahimahi,
)

MAHIMAHI = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "mahimahi"
EVERY_MS = OpportunityTrace(tuple(range(1, 11)))  # one packet per ms, period 10 ms: 12 Mbit/s




def _alone(
    trace: OpportunityTrace | RateTrace | ShiftedTrace,
    payload_bytes: int,
    start_s: float = 0.0,
    *,
    delay_s: float = 0.0,
    overhead=NO_OVERHEAD,
) -> TransferRecord:
    env = simpy.Environment()
    net = Network(env, overhead=overhead)
    cell = net.pipe("cell", trace=trace, delay_s=delay_s)
    proc = start_at(env, net, start_s, payload_bytes, [cell])
    env.run()
    return proc.value


@pytest.mark.parametrize(
    ("payload_bytes", "end_ms"),
    [(1, 1), (1500, 1), (1501, 2), (15_000, 10), (15_001, 11), (45_000, 30)],
)
def test_single_flow_ends_on_its_last_opportunity(payload_bytes: int, end_ms: int) -> None:
    record = _alone(EVERY_MS, payload_bytes)

    assert record.end_s == pytest.approx(end_ms / 1000, abs=1e-12)
    assert record.wire_bytes == payload_bytes


@pytest.mark.parametrize(("start_ms", "end_ms"), [(3.0, 4), (2.5, 3), (9.999, 10), (10.0, 11)])
def test_only_opportunities_strictly_after_the_start_count(start_ms: float, end_ms: int) -> None:
    record = _alone(EVERY_MS, 1500, start_ms / 1000)

    assert record.start_s == start_ms / 1000
    assert record.end_s == pytest.approx(end_ms / 1000, abs=1e-12)


def test_repeated_timestamps_are_several_packets_and_the_trace_wraps() -> None:
    # Opportunities 0, 0, 5, 5, 5, 10 | 10, 10, 15, 15, 15, 20 | ...
    # A flow started at 0 ms sees 5, 5, 5, 10, 10, 10, 15: its 7th packet goes at 15 ms.
    trace = OpportunityTrace((0, 0, 5, 5, 5, 10))

    assert _alone(trace, 7 * 1500).end_s == pytest.approx(0.015)
    assert _alone(trace, 3 * 1500).end_s == pytest.approx(0.005)
    # From 5.1 ms: 10, 10, 10, 15, 15, 15, 20, 20, 20, 25, 25, 25, 30: the 13th at 30 ms.
    assert _alone(trace, 13 * 1500, 0.0051).end_s == pytest.approx(0.030)


def test_transfer_uses_ceil_wire_over_1500_opportunities_plus_delay() -> None:
    # TCP/IP: 100_000 payload bytes -> 69 segments, 102_760 wire bytes -> 69 opportunities.
    record = _alone(EVERY_MS, 100_000, 0.0004, delay_s=0.02, overhead=TCP_IP)

    assert record.wire_bytes == 102_760
    assert math.ceil(102_760 / 1500) == 69
    assert record.end_s == pytest.approx(0.069 + 0.02, abs=1e-12)


def test_rate_trace_transfer_follows_the_integrated_rate() -> None:
    trace = RateTrace((8.0, 0.0, 16.0))  # 1 MB, 0, 2 MB per second

    assert _alone(trace, 1_500_000).end_s == pytest.approx(2.25)
    assert _alone(trace, 2_000_000, 2.5).end_s == pytest.approx(4.0)


@pytest.mark.skipif(not MAHIMAHI.is_dir(), reason="mahimahi traces not present")
def test_real_trace_transfer_ends_on_the_opportunity_it_needs() -> None:
    trace = load_mahimahi(MAHIMAHI / "ATT-LTE-driving.up")
    start_s = 12.3456
    first = trace.opportunities_until(start_s)

    record = _alone(trace, 1_000_000, start_s)

    assert record.end_s == pytest.approx(trace.opportunity_time_s(first + 667), abs=1e-9)


# -- sharing ---------------------------------------------------------------------------
@pytest.mark.parametrize("flows", [2, 3, 4, 7])
@pytest.mark.parametrize("capacity", ["trace", "constant"])
def test_k_equal_flows_each_take_k_times_as_long(flows: int, capacity: str) -> None:
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    if capacity == "trace":
        cell = net.pipe("cell", trace=EVERY_MS)
    else:
        cell = net.pipe("cell", rate_mbps=12.0)
    single_s = 0.020  # 30_000 bytes = 20 packets at one per ms, or at 1.5 MB/s

    procs = [net.transfer(30_000, [cell]) for _ in range(flows)]
    env.run()

    for proc in procs:
        assert proc.value.end_s == pytest.approx(flows * single_s, abs=1e-12)


def test_short_flow_joining_a_long_one_on_a_trace() -> None:
    # Long: 20 packets from 0 ms, alone for the packets at 1..5 ms (7500 B).
    # Short: 3000 B from 5 ms; the packets at 6, 7, 8, 9 ms are split 750/750: short ends at 9.
    # Long has 19_500 B left at 9 ms = 13 packets alone: 10, then 11..22 after the wrap.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    cell = net.pipe("cell", trace=EVERY_MS)

    long = net.transfer(30_000, [cell])
    short = start_at(env, net, 0.005, 3000, [cell])
    env.run()

    assert short.value.end_s == pytest.approx(0.009, abs=1e-12)
    assert long.value.end_s == pytest.approx(0.022, abs=1e-12)


def test_short_flow_joining_a_long_one_on_a_constant_pipe() -> None:
    # 12 Mbit/s = 1500 B/ms; the same bytes as above: short ends at 9 ms, long at 22 ms.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    cell = net.pipe("cell", rate_mbps=12.0)

    long = net.transfer(30_000, [cell])
    short = start_at(env, net, 0.005, 3000, [cell])
    env.run()

    assert short.value.end_s == pytest.approx(0.009, rel=1e-9)
    assert long.value.end_s == pytest.approx(0.022, rel=1e-9)


def test_trace_access_link_into_a_fast_server_stays_exact() -> None:
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    up = net.pipe("client.up", trace=EVERY_MS, delay_s=0.01)
    server = net.pipe("server.in", rate_mbps=1000, delay_s=0.002)

    (record,) = [net.transfer(15_001, [up, server])]
    env.run()

    assert record.value.end_s == pytest.approx(0.011 + 0.012, abs=1e-12)


def test_trace_clients_behind_a_slow_shared_server_get_its_fair_share() -> None:
    # Two clients on 12 Mbit/s traces share a 1.2 Mbit/s server: 75_000 B/s each.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    server = net.pipe("server.in", rate_mbps=1.2)
    ups = [net.pipe(f"c{i}.up", trace=EVERY_MS) for i in range(2)]

    procs = [net.transfer(15_000, [up, server]) for up in ups]
    env.run()

    assert [p.value.end_s for p in procs] == pytest.approx([0.2, 0.2], rel=1e-9)


def test_shared_trace_cell_splits_its_opportunities_max_min() -> None:
    # A cell trace of 12 Mbit/s mean; flow A is held to 2 Mbit/s by its own constant pipe,
    # so B gets the other 10/12 of every opportunity: 15_000 B need 12 packets -> 12 ms.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    cell = net.pipe("cell", trace=EVERY_MS)
    a_own = net.pipe("a.own", rate_mbps=2.0)

    a = net.transfer(1_000_000, [a_own, cell])
    b = net.transfer(15_000, [cell])
    env.run()

    assert b.value.end_s == pytest.approx(0.012, abs=1e-12)
    # A stays held by its own pipe: 1 MB at 250_000 B/s.
    assert a.value.end_s == pytest.approx(4.0, rel=1e-9)


def test_shifted_trace_replays_from_its_offset() -> None:
    # Offset 4.5 ms: simulated 0 is trace 4.5 ms; the packets at 5..10, 11.. are 0.5, 1.5, ...
    shifted = ShiftedTrace(EVERY_MS, 0.0045)

    record = _alone(shifted, 3 * 1500, 0.001)  # trace 5.5 ms: packets at 6, 7, 8 -> sim 3.5 ms

    assert record.end_s == pytest.approx(0.0035, abs=1e-12)
    assert shifted.mean_bytes_per_s == EVERY_MS.mean_bytes_per_s
