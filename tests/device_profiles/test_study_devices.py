"""The EdgeFlowerTune phone's profile and the training-efficiency fields (docs/fidelity.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from device_profiles import ProfileError, get_device, load_device
from testbed.host.roofline import dilate
from testbed.ml.workload import Workload
from tests.testbed.fake_hosts import fake_host


def test_the_study_phone_is_four_a78_cores_at_the_clock_the_study_read() -> None:
    phone = get_device("hi-nova-9-pro")
    assert phone.cpu_cores == 4
    assert phone.cpu_gflops == pytest.approx(4 * 2.4 * 16 * 0.5)  # 76.8: README policy, A78 class
    assert phone.mem_bandwidth_gbps == pytest.approx(6400e6 * 8 / 1e9)  # LPDDR5-3200 x 64 bit
    assert phone.app_ram_budget_mb == int(0.4 * 8 * 1024)
    assert phone.accelerator_gflops is None  # the study trains on the CPU
    assert "BLAS off" in phone.training_runtime
    assert phone.training_efficiency is None  # no published figure: fitted per host by the benchmark
    assert any("current_system_and_device_profile_20260421.md:150-160" in s for s in phone.sources)


def test_no_shipped_profile_sets_an_efficiency_so_device_time_is_unchanged() -> None:
    for name in ("jetson-nano", "pixel-7", "hi-nova-9-pro"):
        assert get_device(name).training_efficiency is None


def test_an_efficiency_needs_its_runtime_named(tmp_path: Path) -> None:
    raw = yaml.safe_load((Path(__file__).parents[2] / "device_profiles/devices/hi-nova-9-pro.yaml").read_text())
    raw.update(name="board", training_runtime=None, training_efficiency=0.05)
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError, match="training_efficiency.*training_runtime is null"):
        load_device(path)
    raw.update(training_runtime="C++ kernels, BLAS off")
    path.write_text(yaml.safe_dump(raw))
    assert load_device(path).training_efficiency == 0.05
    raw.update(training_efficiency=0)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError, match="training_efficiency"):
        load_device(path)


def test_the_efficiency_divides_the_devices_rate() -> None:
    work = Workload(flops=1e12, bytes_moved=1e9)  # 1000 FLOP/B: compute-bound on both sides
    plain = dilate(2.0, workload=work, host=fake_host(), device_gflops=25.0, device_mem_bandwidth_gbps=10.0)
    slow = dilate(2.0, workload=work, host=fake_host(), device_gflops=25.0, device_mem_bandwidth_gbps=10.0,
                  runtime_efficiency=0.05)
    assert plain.device_s == pytest.approx(2.0 * 100 / 25)  # 8 s
    assert slow.device_s == pytest.approx(8.0 / 0.05)  # 160 s
    assert slow.device_attainable_gflops == pytest.approx(25 * 0.05)
    with pytest.raises(ValueError, match="runtime_efficiency"):
        dilate(2.0, workload=work, host=fake_host(), device_gflops=25.0, device_mem_bandwidth_gbps=10.0,
               runtime_efficiency=0.0)
