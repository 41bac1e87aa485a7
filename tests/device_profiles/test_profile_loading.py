"""Loading single profiles: bad input fails with ``file: field: problem``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from device_profiles import DeviceProfile, LinkProfile, ProfileError, load_device, load_link

GOOD_DEVICE: dict[str, Any] = {
    "name": "test-board",
    "display_name": "Test board",
    "cpu_cores": 4,
    "cpu_gflops": 20.0,
    "accelerator": None,
    "accelerator_gflops": None,
    "ram_gb": 4,
    "app_ram_budget_mb": 3072,
    "mem_bandwidth_gbps": 12.8,
    "power_w": None,
    "sources": ["a datasheet"],
    "notes": "cpu_gflops derived from cores x clock",
    "derived": ["cpu_gflops"],
}
GOOD_LINK: dict[str, Any] = {
    "name": "test-link",
    "display_name": "Test link",
    "down_mbps": 10.0,
    "up_mbps": 2,
    "rtt_ms": 40,
    "loss_rate": 0.01,
    "trace_down": None,
    "trace_up": None,
    "radio_up_mw_per_mbps": None,
    "radio_down_mw_per_mbps": None,
    "radio_base_mw": None,
    "sources": ["a report"],
    "notes": "none derived",
    "derived": [],
}


def write(folder: Path, stem: str, data: Any) -> Path:
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def device_file(folder: Path, **changes: Any) -> Path:
    return write(folder, "test-board", {**GOOD_DEVICE, **changes})


def link_file(folder: Path, **changes: Any) -> Path:
    return write(folder, "test-link", {**GOOD_LINK, **changes})


def load_error(load, path: Path) -> str:
    with pytest.raises(ProfileError) as info:
        load(path)
    return str(info.value)


def test_good_device_loads_into_a_frozen_profile(tmp_path: Path) -> None:
    device = load_device(device_file(tmp_path))
    assert isinstance(device, DeviceProfile)
    assert device.ram_gb == 4.0 and isinstance(device.ram_gb, float)
    assert device.sources == ("a datasheet",)


def test_good_link_loads(tmp_path: Path) -> None:
    link = load_link(link_file(tmp_path))
    assert isinstance(link, LinkProfile)
    assert (link.down_mbps, link.up_mbps, link.rtt_ms, link.loss_rate) == (10.0, 2.0, 40.0, 0.01)


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    path = device_file(tmp_path, gpu_tflops=1.0)
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: gpu_tflops: unknown field")
    assert "cpu_gflops" in message  # the known fields are listed


def test_negative_rate_names_file_and_field(tmp_path: Path) -> None:
    path = link_file(tmp_path, up_mbps=-1.0)
    message = load_error(load_link, path)
    assert message.startswith(f"{path}: up_mbps: ")
    assert "greater than 0" in message


def test_zero_device_compute_is_rejected(tmp_path: Path) -> None:
    path = device_file(tmp_path, cpu_gflops=0)
    assert load_error(load_device, path).startswith(f"{path}: cpu_gflops: ")


def test_wrong_type_names_file_and_field(tmp_path: Path) -> None:
    path = device_file(tmp_path, cpu_cores="four")
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: cpu_cores: ")
    assert "'four'" in message


@pytest.mark.parametrize(
    "field, value", [("ram_gb", "8"), ("cpu_cores", 4.5), ("cpu_gflops", True)]
)
def test_no_silent_coercion(tmp_path: Path, field: str, value: Any) -> None:
    path = device_file(tmp_path, **{field: value})
    assert load_error(load_device, path).startswith(f"{path}: {field}: ")


def test_budget_above_ram_names_file_and_field(tmp_path: Path) -> None:
    path = device_file(tmp_path, ram_gb=2, app_ram_budget_mb=3000)
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: app_ram_budget_mb: ")
    assert "exceeds ram_gb" in message


def test_budget_equal_to_ram_is_allowed(tmp_path: Path) -> None:
    device = load_device(device_file(tmp_path, ram_gb=2, app_ram_budget_mb=2048))
    assert device.app_ram_budget_mb == 2048


def test_name_must_match_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path, "other-board", GOOD_DEVICE)
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: name: ")
    assert "'other-board'" in message


def test_name_must_be_kebab_case(tmp_path: Path) -> None:
    path = write(tmp_path, "Test_Board", {**GOOD_DEVICE, "name": "Test_Board"})
    assert load_error(load_device, path).startswith(f"{path}: name: ")


@pytest.mark.parametrize("loss_rate", [1.0, -0.1, 1.5])
def test_loss_rate_must_be_a_fraction_below_one(tmp_path: Path, loss_rate: float) -> None:
    path = link_file(tmp_path, loss_rate=loss_rate)
    assert load_error(load_link, path).startswith(f"{path}: loss_rate: ")


def test_negative_rtt_is_rejected_and_zero_allowed(tmp_path: Path) -> None:
    assert load_link(link_file(tmp_path, rtt_ms=0)).rtt_ms == 0.0
    path = link_file(tmp_path, rtt_ms=-5)
    assert load_error(load_link, path).startswith(f"{path}: rtt_ms: ")


def test_derived_must_name_real_fields(tmp_path: Path) -> None:
    path = device_file(tmp_path, derived=["cpu_gflops", "gpu_magic"])
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: derived: ")
    assert "gpu_magic" in message


def test_sources_must_not_be_empty(tmp_path: Path) -> None:
    path = device_file(tmp_path, sources=[])
    assert load_error(load_device, path).startswith(f"{path}: sources: ")


def test_missing_field_is_an_error_not_a_default(tmp_path: Path) -> None:
    data = {k: v for k, v in GOOD_DEVICE.items() if k != "power_w"}
    path = write(tmp_path, "test-board", data)
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: power_w: required field is missing")


def test_accelerator_gflops_needs_an_accelerator(tmp_path: Path) -> None:
    path = device_file(tmp_path, accelerator=None, accelerator_gflops=100.0)
    assert load_error(load_device, path).startswith(f"{path}: accelerator_gflops: ")


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    path = device_file(tmp_path, cpu_cores=-1, power_w=-3)
    lines = load_error(load_device, path).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["cpu_cores", "power_w"]


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ncpu_cores: [4\n", encoding="utf-8")
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: line ")
    assert "invalid YAML" in message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_non_mapping_file_is_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_error(load_device, path).startswith(f"{path}: (top level): expected a mapping")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_error(load_device, path).startswith(f"{path}: (file): cannot read")


def test_trace_path_resolves_against_the_profile_folder(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "cell.down").write_text("1\n2\n", encoding="utf-8")
    link = load_link(link_file(tmp_path, trace_down="traces/cell.down"))
    assert link.trace_down == str((tmp_path / "traces" / "cell.down").resolve())
    assert link.trace_up is None


def test_missing_trace_file_names_file_and_field(tmp_path: Path) -> None:
    path = link_file(tmp_path, trace_up="traces/nowhere.up")
    message = load_error(load_link, path)
    assert message.startswith(f"{path}: trace_up: no such trace file")


def test_trace_fields_are_optional(tmp_path: Path) -> None:
    data = {k: v for k, v in GOOD_LINK.items() if not k.startswith("trace_")}
    link = load_link(write(tmp_path, "test-link", data))
    assert link.trace_down is None and link.trace_up is None


RADIO = {"radio_up_mw_per_mbps": 438.39, "radio_down_mw_per_mbps": 51.97, "radio_base_mw": 1288.04}


def test_radio_power_model_loads(tmp_path: Path) -> None:
    link = load_link(link_file(tmp_path, **RADIO))
    assert (link.radio_up_mw_per_mbps, link.radio_down_mw_per_mbps, link.radio_base_mw) == (438.39, 51.97, 1288.04)


@pytest.mark.parametrize("field", list(RADIO))
@pytest.mark.parametrize("value", [-1.0, "438", True, float("nan")])
def test_bad_radio_figure_names_file_and_field(tmp_path: Path, field: str, value: Any) -> None:
    path = link_file(tmp_path, **{**RADIO, field: value})
    message = load_error(load_link, path)
    assert message.startswith(f"{path}: {field}: ")
    assert message.count("\n") == 0  # the one bad field, not its partners


def test_radio_power_model_is_all_or_nothing(tmp_path: Path) -> None:
    path = link_file(tmp_path, **{**RADIO, "radio_down_mw_per_mbps": None})
    message = load_error(load_link, path)
    assert message.startswith(f"{path}: radio_base_mw: ")
    assert "null: radio_down_mw_per_mbps" in message


def test_missing_radio_field_is_an_error_not_a_default(tmp_path: Path) -> None:
    data = {k: v for k, v in GOOD_LINK.items() if k != "radio_base_mw"}
    path = write(tmp_path, "test-link", data)
    assert load_error(load_link, path).startswith(f"{path}: radio_base_mw: required field is missing")


def test_zero_radio_figures_are_real_zeros(tmp_path: Path) -> None:  # a wired link, a rate-independent radio
    zeros = {field: 0.0 for field in RADIO} | {"radio_tail_s": 0.0, "radio_tail_mw": 0.0}
    link = load_link(link_file(tmp_path, **zeros))
    assert (link.radio_base_mw, link.radio_tail_s, link.radio_tail_mw) == (0.0, 0.0, 0.0)


def test_radio_tail_loads_and_is_optional(tmp_path: Path) -> None:
    link = load_link(link_file(tmp_path, **RADIO, radio_tail_s=10.12, radio_tail_mw=1060))
    assert (link.radio_tail_s, link.radio_tail_mw) == (10.12, 1060.0)
    assert load_link(link_file(tmp_path, **RADIO)).radio_tail_s is None


def test_radio_tail_is_both_or_neither_and_needs_the_radio_model(tmp_path: Path) -> None:
    path = link_file(tmp_path, **RADIO, radio_tail_s=10.0)
    assert load_error(load_link, path) == (
        f"{path}: radio_tail_mw: radio_tail_s and radio_tail_mw must both be set or both be null")
    path = link_file(tmp_path, radio_tail_s=10.0, radio_tail_mw=1000.0)
    assert "a radio tail needs the radio power model" in load_error(load_link, path)
    path = link_file(tmp_path, **RADIO, radio_tail_s=-1.0, radio_tail_mw=1000.0)
    message = load_error(load_link, path)
    assert message.startswith(f"{path}: radio_tail_s: ") and message.count("\n") == 0


def test_estimated_must_name_real_fields_once(tmp_path: Path) -> None:
    path = device_file(tmp_path, power_w=5.0, estimated=["power_watts"])
    assert load_error(load_device, path).startswith(f"{path}: estimated: not a field of this profile: power_watts")
    path = device_file(tmp_path, power_w=5.0, estimated=["power_w", "power_w"])
    assert "estimated: lists a field more than once" in load_error(load_device, path)


def test_estimated_field_must_have_a_value(tmp_path: Path) -> None:
    path = device_file(tmp_path, estimated=["power_w"])  # power_w is null in GOOD_DEVICE
    assert "estimated: power_w is null; only a given value can be an estimate" in load_error(load_device, path)
    device = load_device(device_file(tmp_path, power_w=5.0, estimated=["power_w"]))
    assert device.estimated == ("power_w",)
    assert load_device(device_file(tmp_path)).estimated == ()  # optional: nothing estimated


def test_profile_error_is_a_value_error() -> None:
    assert issubclass(ProfileError, ValueError)


def test_a_field_that_fails_its_own_check_is_not_also_blamed_for_what_depends_on_it(tmp_path: Path) -> None:
    """A bad radio_base_mw or training_runtime is the one problem named: the tail and the
    efficiency that depend on it are not reported a second time."""
    path = link_file(tmp_path, **(RADIO | {"radio_base_mw": -3.0}), radio_tail_s=10.0, radio_tail_mw=1000.0)
    message = load_error(load_link, path)
    assert message.startswith(f"{path}: radio_base_mw: ") and "radio tail" not in message
    path = device_file(tmp_path, training_runtime=5, training_efficiency=0.5)
    message = load_error(load_device, path)
    assert message.startswith(f"{path}: training_runtime: ") and "training_efficiency" not in message
