"""Helpers shared by the network tests."""

from __future__ import annotations

import simpy

from network import Network, Pipe


def start_at(env: simpy.Environment, net: Network, at_s: float, payload_bytes: int, path: list[Pipe]) -> simpy.Process:
    """A transfer that starts at simulated time `at_s`; its value is the TransferRecord."""

    def later() -> object:
        yield env.timeout(at_s)
        return (yield net.transfer(payload_bytes, path))

    return env.process(later())
