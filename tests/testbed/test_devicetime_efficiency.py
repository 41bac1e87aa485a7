"""DeviceTime divides a device's rate by its profile's training_efficiency (docs/fidelity.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from device_profiles import get_device
from testbed.config.fleet import FleetClient
from testbed.ml.workload import Workload
from testbed.protocol import ComputeSpan
from testbed.sim.devicetime import DeviceTime
from tests.testbed.fake_hosts import fake_host


def _device_s(efficiency: float | None) -> float:
    phone = get_device("hi-nova-9-pro")
    if efficiency is not None:
        phone = phone.model_copy(update={"training_efficiency": efficiency})
    client = FleetClient(0, phone.name, phone, None, 3276.0)  # type: ignore[arg-type]  # the link is not used
    scenario = SimpleNamespace(emulation=SimpleNamespace(use_accelerator=True))
    dt = DeviceTime(scenario, [client], fake_host(), throttled={}, replay=None)  # type: ignore[arg-type]
    span = ComputeSpan("train", 3.0, Workload(flops=1e12, bytes_moved=1e9))  # 1000 FLOP/B: compute-bound
    _, device_s, factor, bound = dt.span(1, 0, span)
    assert bound == "compute"
    assert factor == pytest.approx(device_s / 3.0)
    return device_s


def test_no_efficiency_is_the_plain_roofline() -> None:
    assert _device_s(None) == pytest.approx(3.0 * 100.0 / 76.8)  # fake host 100 GFLOP/s, phone 76.8


def test_an_efficiency_slows_the_device_by_its_inverse() -> None:
    assert _device_s(0.04) == pytest.approx(3.0 * 100.0 / (76.8 * 0.04))
