"""Bad arguments are rejected with a message naming the argument."""

import math

import pytest
import simpy

from network import Network, Pipe


@pytest.fixture
def net() -> Network:
    return Network(simpy.Environment())


def test_negative_rate_is_rejected(net: Network) -> None:
    with pytest.raises(ValueError, match='^"rate_mbps" must be > 0, got -1$'):
        net.pipe("up", rate_mbps=-1)


@pytest.mark.parametrize("rate_mbps", [0, 0.0, math.nan, math.inf])
def test_zero_or_non_finite_rate_is_rejected(net: Network, rate_mbps: float) -> None:
    with pytest.raises(ValueError, match='"rate_mbps"'):
        net.pipe("up", rate_mbps=rate_mbps)


@pytest.mark.parametrize("delay_s", [-0.001, math.nan, math.inf])
def test_bad_delay_is_rejected(net: Network, delay_s: float) -> None:
    with pytest.raises(ValueError, match='"delay_s"'):
        net.pipe("up", rate_mbps=1, delay_s=delay_s)


def test_duplicate_pipe_name_is_rejected(net: Network) -> None:
    net.pipe("up", rate_mbps=1)

    with pytest.raises(ValueError, match="\"name\" must be unique, pipe 'up' already exists"):
        net.pipe("up", rate_mbps=2)


def test_empty_name_is_rejected(net: Network) -> None:
    with pytest.raises(ValueError, match='"name"'):
        net.pipe("", rate_mbps=1)


def test_negative_payload_is_rejected(net: Network) -> None:
    up = net.pipe("up", rate_mbps=1)

    with pytest.raises(ValueError, match='"payload_bytes" must be >= 0, got -1'):
        net.transfer(-1, [up])


def test_empty_path_is_rejected(net: Network) -> None:
    with pytest.raises(ValueError, match='"path" must cross at least one pipe'):
        net.transfer(10, [])


def test_pipe_of_another_network_is_rejected(net: Network) -> None:
    foreign = Pipe("up", rate_mbps=1.0)
    net.pipe("up", rate_mbps=1)

    with pytest.raises(ValueError, match='"path" must hold pipes of this network'):
        net.transfer(10, [foreign])


def test_pipe_crossed_twice_is_rejected(net: Network) -> None:
    up = net.pipe("up", rate_mbps=1)

    with pytest.raises(ValueError, match='"path" must cross each pipe once'):
        net.transfer(10, [up, up])


def test_bad_overhead_is_rejected() -> None:
    with pytest.raises(ValueError, match='"overhead"'):
        Network(simpy.Environment(), overhead="tcp")  # type: ignore[arg-type]
