"""Energy per client-round: profile power x device compute time + the link's radio model."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from device_profiles import devices, links
from testbed.config.fleet import expand_fleet
from testbed.config.scenario import load_scenario
from testbed.results.energy import (ENERGY_COLUMNS, Exchange, RadioPower, busy_s, energy_values, radio_energy_j,
                                    tail_s)
from testbed.sim.session import run_scenario

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.yaml"
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
LTE = RadioPower(up_mw_per_mbps=438.39, down_mw_per_mbps=51.97, base_mw=1288.04)  # Huang et al., LTE
LTE_TAIL = RadioPower(438.39, 51.97, 1288.04, tail_s=10.12, tail_mw=1060)  # + ARO's LTE tail
UMTS = RadioPower(0.0, 0.0, 1300.0, tail_s=14.0, tail_mw=585.71)  # ARO's 3G profile


def client_round_energy(*, device: str, power_w: float | None, device_compute_s: float, link: str,
                        radio: RadioPower | None, exchanges: list[Exchange]) -> dict:
    """The energy columns of a row by name."""
    return dict(zip(ENERGY_COLUMNS, energy_values(device, power_w, device_compute_s, link, radio, exchanges),
                    strict=True))


def test_hand_computed_client_round_energy() -> None:
    # jetson-nano (10 W) computes 2.5 s; on LTE it downloads 500 kB in 0.4 s and uploads 1 MB in 0.7 s
    exchanges = [Exchange("down", 500_000, 0.0, 0.4), Exchange("up", 1_000_000, 3.0, 3.7)]
    row = client_round_energy(device="jetson-nano", power_w=10.0, device_compute_s=2.5, link="lte",
                              radio=LTE, exchanges=exchanges)
    compute_j = 10.0 * 2.5
    # alpha_u x 8 Mbit + alpha_d x 4 Mbit + beta x 1.1 s, in mJ
    radio_j = (438.39 * 8 + 51.97 * 4 + 1288.04 * 1.1) / 1000
    assert radio_j == pytest.approx(5.131844)
    assert row["compute_energy_j"] == pytest.approx(compute_j)
    assert row["radio_energy_j"] == pytest.approx(radio_j)
    assert row["energy_j"] == pytest.approx(30.131844)
    assert row["energy_note"] == ""


def test_radio_energy_equals_power_at_the_achieved_rate_times_duration() -> None:
    # 2 MB up in 4 s = 4 Mbit/s: P = 438.39 x 4 + 1288.04 mW for 4 s
    e = Exchange("up", 2_000_000, 10.0, 14.0)
    assert radio_energy_j(LTE, [e]) == pytest.approx((438.39 * 4 + 1288.04) * 4 / 1000)


def test_overlapping_exchanges_pay_the_base_power_once_and_failed_ones_only_the_base() -> None:
    both = [Exchange("down", 0, 0.0, 2.0), Exchange("up", 0, 1.0, 3.0)]
    assert busy_s((e.start_s, e.end_s) for e in both) == pytest.approx(3.0)
    assert radio_energy_j(LTE, both) == pytest.approx(1288.04 * 3.0 / 1000)
    failed = Exchange("up", 1_000_000, 0.0, 1.0, ok=False)
    assert radio_energy_j(LTE, [failed]) == pytest.approx(1288.04 / 1000)


def test_unknown_figures_give_na_and_say_what_is_missing() -> None:
    row = client_round_energy(device="pixel-7", power_w=None, device_compute_s=2.0, link="lte", radio=LTE,
                              exchanges=[Exchange("up", 1_000_000, 0.0, 1.0)])
    assert row["energy_j"] is None and row["compute_energy_j"] is None
    assert row["radio_energy_j"] == pytest.approx((438.39 * 8 + 1288.04) / 1000)
    assert row["energy_note"] == "power_w unknown for pixel-7"
    row = client_round_energy(device="pixel-7", power_w=None, device_compute_s=2.0, link="umts", radio=None,
                              exchanges=[])
    assert row["energy_j"] is None and row["radio_energy_j"] is None
    assert row["energy_note"] == "power_w unknown for pixel-7; radio power unknown for link umts"


def test_radio_power_must_not_be_negative_and_zero_is_a_real_zero() -> None:
    with pytest.raises(ValueError, match="base_mw"):
        RadioPower(1.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="tail_s"):
        RadioPower(1.0, 1.0, 1.0, tail_s=-1.0)
    wired = RadioPower(0.0, 0.0, 0.0)  # a wired LAN: no radio
    row = client_round_energy(device="jetson-nano", power_w=10.0, device_compute_s=1.0, link="lan", radio=wired,
                              exchanges=[Exchange("up", 1_000_000, 0.0, 0.1)])
    assert row["radio_energy_j"] == 0.0 and row["energy_j"] == pytest.approx(10.0) and row["energy_note"] == ""


def test_tail_after_each_burst_is_cut_short_by_the_next_burst() -> None:
    # bursts [0, 0.4] and [3.0, 3.7]: 2.6 s of silence (< 10.12 s tail), then the round's last tail in full
    exchanges = [Exchange("down", 500_000, 0.0, 0.4), Exchange("up", 1_000_000, 3.0, 3.7)]
    assert tail_s([(e.start_s, e.end_s) for e in exchanges], 10.12) == pytest.approx(2.6 + 10.12)
    no_tail_j = radio_energy_j(LTE, exchanges)
    assert radio_energy_j(LTE_TAIL, exchanges) == pytest.approx(no_tail_j + 1060 * 12.72 / 1000)
    # a silence longer than the tail pays the whole tail; overlapping exchanges form one burst
    assert tail_s([(0.0, 1.0), (0.5, 2.0), (30.0, 31.0)], 10.12) == pytest.approx(2 * 10.12)
    assert tail_s([], 10.12) == 0.0


def test_umts_radio_is_rate_independent_with_a_dch_fach_tail() -> None:
    # 1 MB up in 8 s, ARO's 3G model: DCH 1.30 W whatever the rate, then a 14 s tail at 585.71 mW
    e = Exchange("up", 1_000_000, 0.0, 8.0)
    assert radio_energy_j(UMTS, [e]) == pytest.approx((1300 * 8 + 585.71 * 14) / 1000)


def test_pixel_7_on_lte_by_hand() -> None:
    # The profiles' figures: pixel-7 6.43 W (estimated), lte = Huang et al. + ARO's tail. 30 s of compute;
    # 4 MB down over [0, 2] s, 4 MB up over [32, 34.5] s: 30 s of silence between, longer than the tail.
    clients = {c.name: c for c in expand_fleet(load_scenario(QUICKSTART))}
    pixel = clients["pixel-7"]
    assert (pixel.device.power_w, pixel.link.radio) == (6.43, LTE_TAIL)
    exchanges = [Exchange("down", 4_000_000, 0.0, 2.0), Exchange("up", 4_000_000, 32.0, 34.5)]
    row = client_round_energy(device="pixel-7", power_w=pixel.device.power_w, device_compute_s=30.0, link="lte",
                              radio=pixel.link.radio, exchanges=exchanges)
    # 51.97 x 32 Mbit + 438.39 x 32 Mbit + 1288.04 x 4.5 s + 1060 x (10.12 + 10.12) s, in mJ
    assert row["radio_energy_j"] == pytest.approx(42.9421)
    assert row["compute_energy_j"] == pytest.approx(192.9)
    assert row["energy_j"] == pytest.approx(235.8421)
    assert row["energy_note"] == ""


def _round_energy(client, compute_s: float = 30.0, wire_bytes: int = 2_000_000) -> dict:
    """One round of a client: download, compute, upload, each transfer at its link's mean rate."""
    down_s = wire_bytes * 8 / 1e6 / client.link.down_mbps
    up_s = wire_bytes * 8 / 1e6 / client.link.up_mbps
    exchanges = [Exchange("down", wire_bytes, 0.0, down_s),
                 Exchange("up", wire_bytes, down_s + compute_s, down_s + compute_s + up_s)]
    return client_round_energy(device=client.device.name, power_w=client.device.power_w, device_compute_s=compute_s,
                               link=client.link.name, radio=client.link.radio, exchanges=exchanges)


@pytest.mark.parametrize("scenario", [QUICKSTART, SMOKE], ids=["quickstart", "smoke"])
def test_no_client_of_the_quickstart_and_smoke_fleets_gets_nan_energy(scenario: Path) -> None:
    fleet = expand_fleet(load_scenario(scenario))
    assert len(fleet) >= 3
    for client in fleet:
        row = _round_energy(client)
        assert row["energy_note"] == "", f"{client.name} on {client.link.name}: {row['energy_note']}"
        for column in ("energy_j", "compute_energy_j", "radio_energy_j"):
            assert row[column] is not None and math.isfinite(row[column]), (client.name, column)
        assert row["compute_energy_j"] > 0 and row["radio_energy_j"] > 0
        assert row["energy_j"] == pytest.approx(row["compute_energy_j"] + row["radio_energy_j"])


def test_every_catalogue_device_on_every_catalogue_link_gets_a_number() -> None:
    pairs = [f"{{device: {d}, link: {k}}}" for d in devices() for k in links()]
    fleet = expand_fleet(load_scenario(SMOKE, [f"fleet=[{', '.join(pairs)}]"]))
    assert len(fleet) == len(devices()) * len(links())
    for client in fleet:
        row = _round_energy(client)
        assert row["energy_j"] is not None and math.isfinite(row["energy_j"]), (client.name, client.link.name,
                                                                                 row["energy_note"])


def test_client_rounds_table_carries_the_energy_columns(assets, tmp_path) -> None:
    # pixel-7 (6.43 W) and jetson-nano (10 W) on LTE (radio known, with its tail), raspberry-pi-5 on umts
    # (rate-independent 3G radio), and a jetson-nano on an inline link (no radio model: NA, said so)
    fleet = ("fleet=[{device: pixel-7, link: lte}, {device: jetson-nano, link: lte},"
             " {device: raspberry-pi-5, link: umts}, {device: jetson-nano, link: {down_mbps: 50, up_mbps: 10}}]")
    scenario = load_scenario(SMOKE, ["emulation.backend=inproc", "eval.before_training=false", "framework.rounds=2",
                                     "framework.clients_per_round=4", fleet])
    out = tmp_path / "energy"
    assert run_scenario(scenario, out, quiet=True)["status"] == "completed"
    cr = pd.read_csv(out / "client_rounds.csv")
    events = pd.read_csv(out / "events.csv")
    assert {"energy_j", "compute_energy_j", "radio_energy_j", "energy_note"} <= set(cr.columns)
    assert len(cr) == 8
    power_w = {"pixel-7": 6.43, "jetson-nano": 10.0, "raspberry-pi-5": 11.0}
    for row in cr.itertuples():
        transfers = events[(events["round"] == row.round) & (events["client"] == row.client)
                           & events["kind"].str.endswith(("_up", "_down"))]
        spans = list(zip(transfers.sim_start_s, transfers.sim_end_s))
        assert row.compute_energy_j == pytest.approx(power_w[row.device] * row.device_compute_s)
        if row.link == "lte":  # from events.csv by hand: alpha x wire Mbit + beta x busy s + tail power x tail s
            data_mj = sum((438.39 if t.kind.endswith("_up") else 51.97) * t.wire_bytes * 8 / 1e6
                          for t in transfers.itertuples())
            radio_mj = data_mj + 1288.04 * busy_s(spans) + 1060 * tail_s(spans, 10.12)
            assert row.radio_energy_j == pytest.approx(radio_mj / 1000)
        elif row.link == "umts":  # DCH power while in flight, the DCH+FACH tail after
            assert row.radio_energy_j == pytest.approx((1300 * busy_s(spans) + 585.71 * tail_s(spans, 14.0)) / 1000)
        else:
            assert pd.isna(row.radio_energy_j) and pd.isna(row.energy_j)
            assert row.energy_note == "radio power unknown for link custom"
            continue
        assert row.radio_energy_j > 0
        assert row.energy_j == pytest.approx(row.compute_energy_j + row.radio_energy_j)
        assert pd.isna(row.energy_note)  # nothing missing: an empty cell
