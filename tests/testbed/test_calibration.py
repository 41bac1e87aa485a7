"""Host calibration and the roofline conversion of host time into device time."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
from fake_hosts import fake_host

from testbed.host import calibration
from testbed.host.calibration import HostCalibration, calibrate_host, load_or_calibrate
from testbed.host.roofline import dilate, roofline_gflops
from testbed.ml.workload import Workload, forward_workload, lora_training_workload

# A host with a 100 GFLOP/s fp32 roof, 200 GFLOP/s bf16 roof and 20 GB/s: ridge at 5 FLOP/B.
HOST = fake_host(threads=2, seconds_spent=2.0)


def test_calibrate_host_measures_plausible_rates_and_restores_threads() -> None:
    threads_before = torch.get_num_threads()

    measured = calibrate_host(threads=1, seconds=0.5)

    assert measured.threads == 1
    assert measured.gemm_gflops_fp32 > 1.0
    assert measured.mem_bandwidth_gbps > 0.5
    assert measured.gemm_gflops_bf16 is None or measured.gemm_gflops_bf16 > 0
    assert measured.torch_version == torch.__version__
    assert measured.age_s() < 60
    assert torch.get_num_threads() == threads_before


def test_the_bf16_rate_is_measured_only_where_asked_or_native(monkeypatch) -> None:
    import testbed.host.calibration

    assert calibrate_host(threads=1, seconds=0.1, bf16=False).gemm_gflops_bf16 is None
    monkeypatch.setattr(testbed.host.calibration, "native_bf16", lambda: False)
    assert calibrate_host(threads=1, seconds=0.1).gemm_gflops_bf16 is None  # emulated bf16: not measured
    monkeypatch.setattr(testbed.host.calibration, "native_bf16", lambda: True)
    measured = calibrate_host(threads=1, seconds=0.1)
    assert measured.gemm_gflops_bf16 is None or measured.gemm_gflops_bf16 > 0  # None: no bf16 kernel at all


def test_calibration_round_trips_through_json() -> None:
    data = json.loads(json.dumps(HOST.to_dict()))

    assert HostCalibration.from_dict(data) == HOST
    assert HostCalibration.from_dict({**data, "gemm_gflops_bf16": None}).gemm_gflops_bf16 is None


def test_from_dict_names_unknown_and_missing_keys() -> None:
    data = HOST.to_dict()
    del data["threads"]

    with pytest.raises(ValueError, match=r"unknown keys \['gflops'\], missing keys \['threads'\]"):
        HostCalibration.from_dict({**data, "gflops": 1.0})


def test_calibration_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match='"mem_bandwidth_gbps"'):
        replace(HOST, mem_bandwidth_gbps=0.0)
    with pytest.raises(ValueError, match='"measured_at"'):
        replace(HOST, measured_at="yesterday")


class _FakeMeasure:
    """Stands in for calibrate_host: counts calls, returns HOST measured ``age`` ago."""

    def __init__(self, age: timedelta = timedelta(0)) -> None:
        self.calls: list[int] = []
        self.age = age

    def __call__(self, *, threads: int, seconds: float = 2.0) -> HostCalibration:
        self.calls.append(threads)
        when = (datetime.now(timezone.utc) - self.age).isoformat(timespec="seconds")
        return replace(HOST, threads=threads, measured_at=when)


def test_load_or_calibrate_measures_once_per_thread_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure = _FakeMeasure()
    monkeypatch.setattr(calibration, "calibrate_host", measure)
    cache = tmp_path / "cache" / "host.json"

    first = load_or_calibrate(cache, threads=2)
    second = load_or_calibrate(cache, threads=2)
    other = load_or_calibrate(cache, threads=1)
    again = load_or_calibrate(cache, threads=2)

    assert measure.calls == [2, 1]
    assert first == second == again
    assert other.threads == 1
    assert len(json.loads(cache.read_text())["entries"]) == 2


def test_load_or_calibrate_remeasures_stale_or_other_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "host.json"
    monkeypatch.setattr(calibration, "calibrate_host", _FakeMeasure(age=timedelta(days=8)))
    load_or_calibrate(cache, threads=2)
    measure = _FakeMeasure()
    monkeypatch.setattr(calibration, "calibrate_host", measure)

    load_or_calibrate(cache, threads=2)  # older than 7 days
    load_or_calibrate(cache, threads=2)  # fresh now
    monkeypatch.setattr(calibration.torch, "__version__", "0.0.0")
    load_or_calibrate(cache, threads=2)  # measured with another torch

    assert measure.calls == [2, 2]


def test_load_or_calibrate_really_caches(tmp_path: Path) -> None:
    cache = tmp_path / "host.json"
    measured = load_or_calibrate(cache, threads=1, seconds=0.2)

    assert load_or_calibrate(cache, threads=1, seconds=0.2) == measured


def test_a_broken_cache_is_an_error_naming_the_file(tmp_path: Path) -> None:
    cache = tmp_path / "host.json"
    cache.write_text("{not json")

    with pytest.raises(ValueError, match="host.json"):
        load_or_calibrate(cache, threads=1)


def test_roofline() -> None:
    assert roofline_gflops(100.0, 20.0, 2.0) == 40.0  # memory roof: 2 FLOP/B x 20 GB/s
    assert roofline_gflops(100.0, 20.0, 50.0) == 100.0  # compute roof
    with pytest.raises(ValueError, match='"bandwidth_gbps"'):
        roofline_gflops(100.0, 0.0, 1.0)


def test_dilate_compute_bound_scales_by_peak_ratio() -> None:
    work = Workload(flops=1e12, bytes_moved=1e10)  # 100 FLOP/B: above both ridges

    d = dilate(3.0, workload=work, host=HOST, device_gflops=10.0, device_mem_bandwidth_gbps=5.0)

    assert d.bound == "compute"
    assert d.host_attainable_gflops == 100.0 and d.device_attainable_gflops == 10.0
    assert d.factor == pytest.approx(10.0)
    assert d.device_s == pytest.approx(30.0)


def test_dilate_memory_bound_scales_by_bandwidth_ratio() -> None:
    work = Workload(flops=1e9, bytes_moved=2e9)  # 0.5 FLOP/B: below both ridges

    d = dilate(2.0, workload=work, host=HOST, device_gflops=10.0, device_mem_bandwidth_gbps=5.0)

    assert d.bound == "memory"
    assert d.host_attainable_gflops == 10.0 and d.device_attainable_gflops == 2.5
    assert d.factor == pytest.approx(20.0 / 5.0)
    assert d.device_s == pytest.approx(8.0)


def test_dilate_between_the_ridges() -> None:
    work = Workload(flops=3e9, bytes_moved=1e9)  # 3 FLOP/B: host memory-bound, device compute-bound

    d = dilate(1.0, workload=work, host=HOST, device_gflops=10.0, device_mem_bandwidth_gbps=5.0)

    assert d.bound == "compute"
    assert d.factor == pytest.approx(60.0 / 10.0)  # host min(100, 3 x 20) / device min(10, 3 x 5)


def test_dilate_bf16_uses_the_bf16_roof() -> None:
    work = Workload(flops=1e12, bytes_moved=1e9)

    device = {"device_gflops": 50.0, "device_mem_bandwidth_gbps": 50.0}

    d = dilate(1.0, workload=work, host=HOST, precision="bf16", **device)

    assert d.factor == pytest.approx(200.0 / 50.0)
    no_bf16 = replace(HOST, gemm_gflops_bf16=None)
    with pytest.raises(ValueError, match="bf16"):
        dilate(1.0, workload=work, host=no_bf16, precision="bf16", **device)


def test_dilate_bf16_uses_the_measured_step_speedup_over_the_gemm_rate() -> None:
    work = Workload(flops=1e12, bytes_moved=1e9)  # 1000 FLOP/B: compute-bound everywhere
    device = {"device_gflops": 50.0, "device_mem_bandwidth_gbps": 50.0}
    host = replace(HOST, bf16_step_speedup=1.5)
    d = dilate(1.0, workload=work, host=host, precision="bf16", **device)
    assert d.factor == pytest.approx(100.0 * 1.5 / 50.0)  # not the 200 GFLOP/s bf16 GEMM rate
    # the same work in fp32 takes 1.5x the host time: both give the same device time
    fp32 = dilate(1.5, workload=work, host=host, precision="fp32", **device)
    assert fp32.device_s == pytest.approx(d.device_s)
    assert HostCalibration.from_dict(host.to_dict()) == host
    old = {k: v for k, v in HOST.to_dict().items() if k != "bf16_step_speedup"}
    assert HostCalibration.from_dict(old).bf16_step_speedup is None  # caches written before it still load


@pytest.mark.parametrize(
    ("argument", "kwargs"),
    [("host_s", {"host_s": 0.0}), ("device_gflops", {"device_gflops": -1.0}),
     ("device_mem_bandwidth_gbps", {"device_mem_bandwidth_gbps": 0.0})],
)
def test_dilate_names_the_bad_argument(argument: str, kwargs: dict[str, float]) -> None:
    args = {"host_s": 1.0, "device_gflops": 10.0, "device_mem_bandwidth_gbps": 5.0, **kwargs}
    host_s = args.pop("host_s")

    with pytest.raises(ValueError, match=f'"{argument}"'):
        dilate(host_s, workload=Workload(1.0, 1.0), host=HOST, **args)


def test_workload_rejects_zero_bytes() -> None:
    with pytest.raises(ValueError, match='"bytes_moved"'):
        Workload(flops=1.0, bytes_moved=0.0)


def test_lora_step_of_smollm2_is_compute_bound_on_an_edge_device() -> None:
    n_params, n_trainable, tokens = 134_515_008, 460_800, 768

    work = lora_training_workload(n_params=n_params, n_trainable=n_trainable, tokens=tokens)
    d = dilate(5.0, workload=work, host=HOST, device_gflops=100.0, device_mem_bandwidth_gbps=25.0)

    assert work.flops == pytest.approx((4 * n_params + 2 * n_trainable) * tokens)
    assert work.bytes_moved == pytest.approx(3 * n_params * 4 + 32 * n_trainable)
    assert work.arithmetic_intensity > 4.0  # the device's ridge: 100 GFLOP/s / 25 GB/s
    assert d.bound == "compute"


def test_forward_workload() -> None:
    work = forward_workload(n_params=1_000_000, tokens=100, weight_bytes_per_param=2.0)

    assert work.flops == 2e8
    assert work.bytes_moved == 2e6
    assert work.arithmetic_intensity == 100.0
    with pytest.raises(ValueError, match='"n_trainable"'):
        lora_training_workload(n_params=10, n_trainable=11, tokens=1)
