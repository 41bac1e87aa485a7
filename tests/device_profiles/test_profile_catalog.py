"""The shipped catalog: it loads, it is complete, and its numbers match the sourced values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from rich.console import Console

import device_profiles
from device_profiles import (
    DeviceProfile,
    LinkProfile,
    ProfileError,
    catalog_tables,
    devices,
    get_device,
    get_link,
    links,
)
from device_profiles.schema import RADIO_FIELDS, TAIL_FIELDS

REQUIRED_DEVICES = {
    "low-end-android", "pixel-7", "pixel-8", "galaxy-s23", "galaxy-s24", "iphone-14",
    "iphone-15-pro", "jetson-nano", "jetson-xavier-nx", "jetson-orin-nano", "jetson-agx-orin",
    "raspberry-pi-4", "raspberry-pi-5",
}
REQUIRED_LINKS = {
    "umts", "evdo", "lte", "lte-us-2019", "5g", "wifi", "starlink", "geo-satellite", "nb-iot",
    "lan",
}
PACKAGE_DIR = Path(device_profiles.__file__).parent


def test_catalog_holds_the_required_devices_and_links() -> None:
    assert len(devices()) >= 12
    assert len(links()) >= 10
    assert REQUIRED_DEVICES <= set(devices())
    assert REQUIRED_LINKS <= set(links())


def test_catalog_has_one_profile_per_shipped_file() -> None:
    assert set(devices()) == {p.stem for p in (PACKAGE_DIR / "devices").glob("*.yaml")}
    assert set(links()) == {p.stem for p in (PACKAGE_DIR / "links").glob("*.yaml")}


def test_catalog_is_sorted_by_name_and_keyed_by_name() -> None:
    for catalog in (devices(), links()):
        assert list(catalog) == sorted(catalog)
        assert all(key == profile.name for key, profile in catalog.items())


def test_catalog_returns_a_fresh_dict_each_call() -> None:
    first = devices()
    first.pop("pixel-7")
    assert "pixel-7" in devices()


@pytest.mark.parametrize("profile", [*devices().values(), *links().values()], ids=lambda p: p.name)
def test_every_profile_has_sources_notes_and_real_derived_fields(profile) -> None:
    assert profile.sources and all(s.strip() for s in profile.sources)
    assert profile.notes.strip()
    assert set(profile.derived) <= set(type(profile).model_fields)
    for field in profile.derived:  # every derived field is explained in the notes
        assert field in profile.notes, f"{profile.name}: {field} is derived but not explained"


@pytest.mark.parametrize("device", devices().values(), ids=lambda d: d.name)
def test_every_device_follows_the_ram_budget_policy(device: DeviceProfile) -> None:
    fraction = 0.75 if device.name.startswith(("jetson-", "raspberry-pi-")) else 0.40
    assert device.app_ram_budget_mb == math.floor(device.ram_gb * 1024 * fraction)
    assert "app_ram_budget_mb" in device.derived
    assert "cpu_gflops" in device.derived  # sustained compute is never published as such


@pytest.mark.parametrize("device", devices().values(), ids=lambda d: d.name)
def test_every_device_has_the_numbers_the_emulator_needs(device: DeviceProfile) -> None:
    assert device.mem_bandwidth_gbps is not None  # the roofline dilation divides by it
    assert device.cpu_gflops > 0 and device.cpu_cores > 0
    if device.accelerator_gflops is not None:
        assert device.accelerator is not None


@pytest.mark.parametrize("link", links().values(), ids=lambda link: link.name)
def test_shipped_links_work_without_trace_files(link: LinkProfile) -> None:
    assert link.trace_down is None and link.trace_up is None


def test_jetson_nano_matches_the_nvidia_spec() -> None:
    nano = get_device("jetson-nano")
    assert nano.ram_gb == 4
    assert nano.mem_bandwidth_gbps == 25.6
    assert nano.cpu_cores == 4
    assert nano.cpu_gflops == pytest.approx(4 * 1.43 * 8 * 0.5)
    assert nano.accelerator_gflops == pytest.approx(472 / 2 * 0.5, rel=1e-3)  # FP32 = FP16 / 2


def test_jetson_boards_match_their_datasheets() -> None:
    agx = get_device("jetson-agx-orin")
    assert (agx.ram_gb, agx.mem_bandwidth_gbps, agx.cpu_cores) == (64, 204.8, 12)
    assert agx.accelerator_gflops == pytest.approx(5300 * 0.5)
    orin_nano = get_device("jetson-orin-nano")
    assert (orin_nano.ram_gb, orin_nano.mem_bandwidth_gbps) == (8, 68)
    assert orin_nano.cpu_gflops == pytest.approx(6 * 1.5 * 16 * 0.5)
    assert get_device("jetson-xavier-nx").mem_bandwidth_gbps == 51.2


def test_raspberry_pis_use_measured_hpl_times_two() -> None:
    assert get_device("raspberry-pi-4").cpu_gflops == pytest.approx(11.9 * 2)
    assert get_device("raspberry-pi-5").cpu_gflops == pytest.approx(30.2 * 2)
    assert get_device("raspberry-pi-5").power_w == 11
    assert get_device("raspberry-pi-4").power_w == 7.2


def test_phone_cpu_compute_uses_big_cores_only() -> None:
    pixel = get_device("pixel-7")
    assert pixel.cpu_cores == 4  # 2x X1 + 2x A78; the 4x A55 are left to the OS
    assert pixel.cpu_gflops == pytest.approx((2 * 2.85 * 32 + 2 * 2.35 * 16) * 0.5)
    low_end = get_device("low-end-android")
    assert low_end.cpu_gflops == pytest.approx(2 * 2.2 * 16 * 0.5)
    assert low_end.accelerator_gflops is None


def test_lte_us_2019_matches_opensignal() -> None:
    lte = get_link("lte-us-2019")
    assert (lte.down_mbps, lte.up_mbps) == (21.3, 6.3)
    assert 44 <= lte.rtt_ms <= 66


def test_links_match_their_sources() -> None:
    assert (get_link("umts").down_mbps, get_link("umts").up_mbps) == (2.02, 0.94)
    assert (get_link("evdo").down_mbps, get_link("evdo").up_mbps) == (0.52, 0.84)
    assert (get_link("5g").down_mbps, get_link("5g").up_mbps) == (166, 21)
    assert (get_link("wifi").down_mbps, get_link("wifi").up_mbps, get_link("wifi").rtt_ms) == (
        85.7, 45.7, 21)
    starlink = get_link("starlink")
    assert (starlink.down_mbps, starlink.up_mbps) == (104.7, 14.8)
    assert 37 <= starlink.rtt_ms <= 72
    assert 630 <= get_link("geo-satellite").rtt_ms <= 724
    assert 0.005 <= get_link("nb-iot").down_mbps <= 0.05
    assert get_link("lan").down_mbps == 1000


def test_lte_links_carry_the_huang_lte_radio_model_and_the_aro_tail() -> None:
    for name in ("lte", "lte-us-2019", "lte-driving"):
        link = get_link(name)
        assert (link.radio_up_mw_per_mbps, link.radio_down_mw_per_mbps, link.radio_base_mw) == (438.39, 51.97, 1288.04)
        assert (link.radio_tail_s, link.radio_tail_mw) == (pytest.approx(0.1 + 0.02 + 10), 1060)
        assert any("MobiSys 2012" in source for source in link.sources)
        assert any("lte.conf" in source and "P_TAIL 1.06 W" in source for source in link.sources)
        assert not link.estimated  # measured LTE figures, taken as is


def test_every_link_has_a_complete_radio_model_with_its_reason_in_the_notes() -> None:
    for link in links().values():
        figures = [getattr(link, field) for field in (*RADIO_FIELDS, *TAIL_FIELDS)]
        assert None not in figures, f"{link.name}: a radio figure is null, its clients would get NaN energy"
        assert all(value >= 0 and math.isfinite(value) for value in figures), link.name
        assert "radio_*" in link.notes, link.name


def test_radio_figures_of_3g_wifi_5g_and_a_wired_lan() -> None:
    umts = get_link("umts")  # ARO's 3G profile: DCH 1.30 W whatever the rate; tail DCH 4 s + FACH 10 s
    assert (umts.radio_up_mw_per_mbps, umts.radio_down_mw_per_mbps, umts.radio_base_mw) == (0, 0, 1300)
    assert umts.radio_tail_s * umts.radio_tail_mw == pytest.approx(4 * 1300 + 10 * 300, abs=0.1)
    wifi = get_link("wifi")  # ARO's Wi-Fi profile: 403 mW active, 0.25 s tail at the same power
    assert (wifi.radio_base_mw, wifi.radio_tail_s, wifi.radio_tail_mw) == (403, 0.25, 403)
    five_g = get_link("5g")  # 2.5 x the LTE figures (Xu et al.: 2-3x the power of 4G), an estimate
    assert five_g.radio_base_mw == pytest.approx(2.5 * 1288.04)
    assert five_g.radio_tail_mw == pytest.approx(2.5 * 1060)
    assert set(five_g.estimated) == {*RADIO_FIELDS, *TAIL_FIELDS}
    lan = get_link("lan")  # no radio: a real zero, not an unknown
    assert [getattr(lan, f) for f in (*RADIO_FIELDS, *TAIL_FIELDS)] == [0, 0, 0, 0, 0]
    assert not lan.estimated and "by definition" in lan.notes


def test_every_device_has_a_power_figure() -> None:
    missing = sorted(name for name, device in devices().items() if device.power_w is None)
    assert not missing, (f"power_w is null for {', '.join(missing)}: their clients would get NaN energy; "
                         "add a sourced figure, or an estimate listed in `estimated` (device_profiles/README.md)")


def test_phone_power_figures_and_their_estimates() -> None:
    assert get_device("pixel-7").power_w == 6.43  # Pixel 7 Pro under 3DMark: 1608 mA x 4.0 V
    assert get_device("galaxy-s23").power_w == pytest.approx((7.3 + 7.6) / 2)
    low_end = get_device("low-end-android")  # the S23's figure at equal energy per FLOP
    assert low_end.power_w == pytest.approx(7.45 * low_end.cpu_gflops / get_device("galaxy-s23").cpu_gflops, abs=0.01)
    for name in ("pixel-7", "pixel-8", "galaxy-s23", "galaxy-s24", "iphone-14", "iphone-15-pro", "low-end-android"):
        assert "power_w" in get_device(name).estimated, name
    for name in ("jetson-nano", "raspberry-pi-5"):  # a power-mode budget, a measured draw: not estimates
        assert not get_device(name).estimated


@pytest.mark.parametrize("profile", [*devices().values(), *links().values()], ids=lambda p: p.name)
def test_every_estimate_is_a_set_field_explained_in_the_notes(profile) -> None:
    fields = type(profile).model_fields
    for field in profile.estimated:
        assert field in fields and getattr(profile, field) is not None, f"{profile.name}: {field}"
        # named in the notes (the radio fields may be named together as radio_*), with the word
        assert field in profile.notes or (field.startswith("radio_") and "radio_*" in profile.notes), field
    if profile.estimated:
        assert "estimated" in profile.notes, profile.name


def test_every_shipped_link_states_its_radio_fields() -> None:
    for path in (PACKAGE_DIR / "links").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert {*RADIO_FIELDS, *TAIL_FIELDS} <= set(raw), path.name


def test_unknown_device_lists_the_known_names() -> None:
    with pytest.raises(ProfileError) as info:
        get_device("nokia-3310")
    message = str(info.value)
    assert "unknown device 'nokia-3310'" in message
    assert "pixel-7" in message and "raspberry-pi-5" in message


def test_unknown_link_lists_the_known_names() -> None:
    with pytest.raises(ProfileError, match=r"unknown link 'carrier-pigeon'; known: .*lte-us-2019"):
        get_link("carrier-pigeon")


def test_profiles_are_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        get_device("pixel-7").cpu_gflops = 1.0  # type: ignore[misc]


def test_catalog_tables_list_every_profile() -> None:
    device_table, link_table = catalog_tables()
    assert device_table.row_count == len(devices())
    assert link_table.row_count == len(links())
    assert [c.header for c in device_table.columns][:3] == ["name", "cores", "CPU GFLOP/s"]
    console = Console(width=200, record=True)
    console.print(device_table, link_table)
    text = console.export_text()
    assert "jetson-agx-orin" in text and "geo-satellite" in text
    assert "49152" in text  # AGX Orin's app budget
    assert "1288.04" in text  # the LTE links' radio base power
