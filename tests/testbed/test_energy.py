"""Energy per client-round: profile power x device compute time + the link's radio model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.config.scenario import load_scenario
from testbed.results.energy import Exchange, RadioPower, busy_s, client_round_energy, radio_energy_j
from testbed.sim.session import run_scenario

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.yaml"
LTE = RadioPower(up_mw_per_mbps=438.39, down_mw_per_mbps=51.97, base_mw=1288.04)  # Huang et al., LTE


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


def test_radio_power_must_be_positive() -> None:
    with pytest.raises(ValueError, match="base_mw"):
        RadioPower(1.0, 1.0, 0.0)


def test_client_rounds_table_carries_the_energy_columns(assets, tmp_path) -> None:
    # pixel-7 (power unknown) and jetson-nano (10 W) on LTE (radio known), raspberry-pi-5 on umts (radio unknown)
    fleet = ("fleet=[{device: pixel-7, link: lte}, {device: jetson-nano, link: lte},"
             " {device: raspberry-pi-5, link: umts}]")
    scenario = load_scenario(SMOKE, ["emulation.backend=inproc", "eval.before_training=false", "framework.rounds=2",
                                     "framework.clients_per_round=3", fleet])
    out = tmp_path / "energy"
    assert run_scenario(scenario, out, quiet=True)["status"] == "completed"
    cr = pd.read_csv(out / "client_rounds.csv")
    events = pd.read_csv(out / "events.csv")
    assert {"energy_j", "compute_energy_j", "radio_energy_j", "energy_note"} <= set(cr.columns)
    assert len(cr) == 6
    for row in cr.itertuples():
        transfers = events[(events["round"] == row.round) & (events["client"] == row.client)
                           & events["kind"].str.endswith(("_up", "_down"))]
        if row.link == "lte":  # from events.csv by hand: alpha x wire Mbit + beta x busy seconds
            data_mj = sum((438.39 if t.kind.endswith("_up") else 51.97) * t.wire_bytes * 8 / 1e6
                          for t in transfers.itertuples())
            base_mj = 1288.04 * busy_s(zip(transfers.sim_start_s, transfers.sim_end_s))
            assert row.radio_energy_j == pytest.approx((data_mj + base_mj) / 1000)
            assert row.radio_energy_j > 0
        else:
            assert pd.isna(row.radio_energy_j)
        if row.device == "jetson-nano":
            assert row.compute_energy_j == pytest.approx(10.0 * row.device_compute_s)
            assert row.energy_j == pytest.approx(row.compute_energy_j + row.radio_energy_j)
            assert pd.isna(row.energy_note)  # nothing missing: an empty cell
        elif row.device == "pixel-7":
            assert pd.isna(row.energy_j) and pd.isna(row.compute_energy_j)
            assert row.energy_note == "power_w unknown for pixel-7"
        else:
            assert row.compute_energy_j == pytest.approx(11.0 * row.device_compute_s)
            assert pd.isna(row.energy_j)
            assert row.energy_note == "radio power unknown for link umts"
