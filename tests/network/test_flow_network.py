"""Transfer times on the fluid network, checked against hand-computed end times."""

import math

import pytest
import simpy

from network import NO_OVERHEAD, TCP_IP, Network, TransferRecord


def _run(env: simpy.Environment, *procs: simpy.Process) -> list[TransferRecord]:
    env.run()
    return [p.value for p in procs]


def test_single_flow_takes_delay_plus_bytes_over_rate() -> None:
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    link = net.pipe("uplink", rate_mbps=12.5, delay_s=0.03)

    (record,) = _run(env, net.transfer(3_000_000, [link], label="update"))

    assert record.duration_s == pytest.approx(0.03 + 3_000_000 * 8 / 12.5e6, rel=1e-9)
    assert (record.label, record.status, record.start_s) == ("update", "ok", 0.0)
    assert record.payload_bytes == record.wire_bytes == 3_000_000
    assert net.records == [record]


def test_tcp_ip_duration_follows_wire_bytes() -> None:
    env = simpy.Environment()
    net = Network(env)  # TCP_IP by default
    link = net.pipe("uplink", rate_mbps=10, delay_s=0.01)

    (record,) = _run(env, net.transfer(1_000_000, [link]))

    assert record.wire_bytes == 1_000_000 + math.ceil(1_000_000 / 1460) * 40 == 1_027_400
    assert record.duration_s == pytest.approx(0.01 + 1_027_400 * 8 / 10e6, rel=1e-9)
    assert TCP_IP.wire_bytes(1_000_000) == record.wire_bytes


def test_path_delay_is_the_sum_of_pipe_delays() -> None:
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    path = [
        net.pipe("client_up", rate_mbps=50, delay_s=0.02),
        net.pipe("core", rate_mbps=1000, delay_s=0.005),
        net.pipe("server_in", rate_mbps=20, delay_s=0.001),
    ]

    (record,) = _run(env, net.transfer(500_000, path))

    assert record.duration_s == pytest.approx(0.026 + 500_000 * 8 / 20e6, rel=1e-9)


def test_zero_payload_without_overhead_takes_the_propagation_delay() -> None:
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    link = net.pipe("uplink", rate_mbps=1, delay_s=0.25)

    (record,) = _run(env, net.transfer(0, [link]))

    assert (record.wire_bytes, record.duration_s) == (0, 0.25)
    assert net.active_flows == 0


def test_zero_payload_with_tcp_ip_sends_one_header() -> None:
    env = simpy.Environment()
    net = Network(env)
    link = net.pipe("uplink", rate_mbps=1, delay_s=0.25)

    (record,) = _run(env, net.transfer(0, [link]))

    assert record.wire_bytes == 40
    assert record.duration_s == pytest.approx(0.25 + 40 * 8 / 1e6, rel=1e-9)


def _two_clients(env: simpy.Environment) -> tuple[Network, list, list]:
    net = Network(env)
    server_in = net.pipe("server_in", rate_mbps=10, delay_s=0.002)
    path_a = [net.pipe("a_up", rate_mbps=100, delay_s=0.01), server_in]
    path_b = [net.pipe("b_up", rate_mbps=100, delay_s=0.01), server_in]
    return net, path_a, path_b


def test_two_flows_through_a_shared_bottleneck_each_take_twice_as_long() -> None:
    env_alone, env_both = simpy.Environment(), simpy.Environment()
    net_alone, path_a, _ = _two_clients(env_alone)
    net_both, path_a2, path_b2 = _two_clients(env_both)

    (alone,) = _run(env_alone, net_alone.transfer(1_000_000, path_a))
    both = _run(
        env_both, net_both.transfer(1_000_000, path_a2), net_both.transfer(1_000_000, path_b2)
    )

    for record in both:
        assert record.duration_s == pytest.approx(2 * alone.duration_s, rel=0.01)
        serving_s = record.duration_s - 0.012  # minus the path's propagation delay
        assert serving_s == pytest.approx(2 * (alone.duration_s - 0.012), rel=1e-9)


def _start_later(
    env: simpy.Environment, net: Network, at_s: float, payload_bytes: int, path: list
) -> simpy.Process:
    """Ask for the transfer at `at_s`; the process's value is its TransferRecord."""

    def later() -> object:
        yield env.timeout(at_s)
        return (yield net.transfer(payload_bytes, path, label="late"))

    return env.process(later())


def test_flow_joining_halfway_shares_then_speeds_up() -> None:
    # 10 Mbit/s pipe. A sends 10 Mbit (1.25 MB): alone it would need 1.0 s.
    # B (10 Mbit) joins at 0.5 s: both get 5 Mbit/s, A's last 5 Mbit end at 1.5 s.
    # B has 5 Mbit left at 1.5 s, now alone at 10 Mbit/s: served at 2.0 s. Plus 0.04 s delay.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    link = net.pipe("cell", rate_mbps=10, delay_s=0.04)

    a = net.transfer(1_250_000, [link], label="early")
    b = _start_later(env, net, 0.5, 1_250_000, [link])
    env.run(until=0.75)
    flows_midway = net.active_flows
    env.run()

    assert flows_midway == 2
    assert a.value.end_s == pytest.approx(1.54, rel=1e-9)
    assert b.value.start_s == 0.5
    assert b.value.end_s == pytest.approx(2.04, rel=1e-9)
    assert [r.label for r in net.records] == ["early", "late"]
    assert net.active_flows == 0


def test_max_min_share_with_unequal_constraints() -> None:
    # A is held to 2 Mbit/s by its own pipe; B gets the other 8 of the shared 10 Mbit/s.
    # A: 2 Mbit at 2 Mbit/s -> served at 1.0 s.
    # B: 16 Mbit; 8 Mbit by 1.0 s, then the last 8 Mbit at 10 Mbit/s -> served at 1.8 s.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    shared = net.pipe("server_in", rate_mbps=10, delay_s=0.005)
    a_up = net.pipe("a_up", rate_mbps=2, delay_s=0.02)
    b_up = net.pipe("b_up", rate_mbps=100, delay_s=0.001)

    a, b = _run(env, net.transfer(250_000, [a_up, shared]), net.transfer(2_000_000, [b_up, shared]))

    assert a.end_s == pytest.approx(1.0 + 0.025, rel=1e-9)
    assert b.end_s == pytest.approx(1.8 + 0.006, rel=1e-9)


def test_parking_lot_rates_change_as_flows_finish() -> None:
    # long crosses p1 (6 Mbit/s) and p2 (10 Mbit/s); short1 only p1; short2 only p2.
    # Rates: long 3, short1 3, short2 7 Mbit/s. short1 (3 Mbit) served at 1.0 s.
    # Then long alone on p1 (cap 6) but p2 is shared with short2: 5 / 5.
    # short2 (14 Mbit): 7 by 1.0 s, 7 left at 5 Mbit/s -> 2.4 s.
    # long (12 Mbit): 3 by 1.0 s, 1.4 s * 5 = 7 more by 2.4 s, last 2 at 6 Mbit/s -> 2.4 + 1/3 s.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    p1 = net.pipe("p1", rate_mbps=6)
    p2 = net.pipe("p2", rate_mbps=10)

    long, short1, short2 = _run(
        env,
        net.transfer(1_500_000, [p1, p2]),
        net.transfer(375_000, [p1]),
        net.transfer(1_750_000, [p2]),
    )

    assert short1.end_s == pytest.approx(1.0, rel=1e-9)
    assert short2.end_s == pytest.approx(2.4, rel=1e-9)
    assert long.end_s == pytest.approx(2.4 + 1 / 3, rel=1e-9)


def test_many_equal_flows_finish_together_and_in_start_order() -> None:
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    cell = net.pipe("cell", rate_mbps=40, delay_s=0.01)

    records = _run(env, *[net.transfer(100_000, [cell], label=f"c{i}") for i in range(50)])

    for record in records:
        assert record.end_s == pytest.approx(0.01 + 50 * 100_000 * 8 / 40e6, rel=1e-9)
    assert [r.label for r in net.records] == [f"c{i}" for i in range(50)]


def test_huge_payload_with_a_late_joiner_ends_on_time() -> None:
    # 1 TB at 1 Gbit/s alone is 8000 s; a 1 GB flow joins at 1000.1 s and halves the rate:
    # it needs 16 s at 0.5 Gbit/s, delaying the big one by 8 s.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    core = net.pipe("core", rate_mbps=1000)

    big = net.transfer(10**12, [core])
    small = _start_later(env, net, 1000.1, 10**9, [core])
    env.run()

    assert small.value.end_s == pytest.approx(1016.1, rel=1e-9)
    assert big.value.end_s == pytest.approx(8008.0, rel=1e-9)
    assert env.now == big.value.end_s


def test_same_scenario_gives_identical_records() -> None:
    def scenario() -> list[TransferRecord]:
        env = simpy.Environment()
        net = Network(env)
        shared = net.pipe("shared", rate_mbps=7.3, delay_s=0.013)
        for i in range(6):
            own = net.pipe(f"up{i}", rate_mbps=1.1 + i, delay_s=0.001 * i)
            _start_later(env, net, 0.037 * i, 123_457 * (i + 1), [own, shared])
        env.run()
        return net.records

    assert scenario() == scenario()


def test_transfer_is_an_event_that_composes_with_others() -> None:
    # 1 MB/s link. The AnyOf fires at 0.5 s with the tick; A has 0.5 MB left then, as much
    # as B, which starts at 0.5 s: they share the link and are both served at 1.5 s.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    link = net.pipe("link", rate_mbps=8)
    got: dict[str, object] = {}

    def waiter() -> object:
        first = yield net.transfer(1_000_000, [link], label="a") | env.timeout(0.5, "tick")
        got["first"] = list(first.values())
        both = yield env.all_of([net.transfer(500_000, [link], label="b")])
        got["both"] = [r.label for r in both.values()]

    env.process(waiter())
    env.run()

    assert got == {"first": ["tick"], "both": ["b"]}
    assert [(r.label, r.end_s) for r in net.records] == [
        ("a", pytest.approx(1.5, rel=1e-9)),
        ("b", pytest.approx(1.5, rel=1e-9)),
    ]


def test_flow_starting_as_another_is_served_gets_the_whole_link() -> None:
    # A is served at exactly 1.0 s; B asks at 1.0 s and must not share with A at all.
    env = simpy.Environment()
    net = Network(env, overhead=NO_OVERHEAD)
    link = net.pipe("link", rate_mbps=10, delay_s=0.01)

    a = net.transfer(1_250_000, [link])
    b = _start_later(env, net, 1.0, 1_250_000, [link])
    env.run()

    assert a.value.end_s == pytest.approx(1.01, rel=1e-9)
    assert b.value.end_s == pytest.approx(2.01, rel=1e-9)
