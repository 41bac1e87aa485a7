"""Client availability schedules: synthetic diurnal ones and the FedScale import."""

from __future__ import annotations

import json
import math

import pytest

from testbed.config.availability import ALWAYS, AvailabilityError, Schedule, diurnal, load_fedscale


def test_a_schedule_answers_online_offline_and_next_online():
    s = Schedule(((10.0, 40.0), (60.0, 100.0)), period_s=100.0)
    assert not s.online(5) and s.online(10) and s.online(39.9) and not s.online(40) and s.online(170)
    assert not s.online(150)
    assert s.offline_at(20) == 40.0 and s.offline_at(70) == 100.0
    assert s.next_online(45) == 60.0 and s.next_online(5) == 10.0 and s.next_online(240) == 260.0
    assert s.offline_windows(250) == [(0.0, 10.0), (40.0, 60.0), (100.0, 110.0), (140.0, 160.0), (200.0, 210.0),
                                      (240.0, 250)]
    wrapping = Schedule(((0.0, 20.0), (80.0, 100.0)), period_s=100.0)  # online 80 -> 120, across the period
    assert wrapping.offline_at(90) == 120.0 and wrapping.offline_windows(200) == [(20.0, 80.0), (120.0, 180.0)]
    assert ALWAYS.online(1e9) and ALWAYS.offline_at(3.0) == math.inf and ALWAYS.offline_windows(100) == []
    late = Schedule(((100.0, math.inf),))  # online for good, but only from 100 s on
    assert late.offline_at(50.0) == 50.0 and late.offline_at(100.0) == math.inf
    periodic = Schedule(((5.0, 100.0),), period_s=100.0)  # online from 5 s of each period to its end: no shortcut
    assert periodic.offline_at(102.0) == 102.0 and periodic.offline_at(50.0) == 100.0


def test_diurnal_clients_are_online_their_share_of_each_period_at_seeded_phases():
    a = diurnal(50, period_s=1000.0, on_fraction=0.3, seed=4)
    assert a == diurnal(50, period_s=1000.0, on_fraction=0.3, seed=4)
    assert a != diurnal(50, period_s=1000.0, on_fraction=0.3, seed=5)
    for s in a:
        offline = sum(t2 - t1 for t1, t2 in s.offline_windows(10_000.0))
        assert offline == pytest.approx(7_000.0, abs=1e-6)
    online_share = sum(s.online(1234.5) for s in a) / len(a)
    assert 0.1 < online_share < 0.5
    assert diurnal(3, period_s=10.0, on_fraction=1.0, seed=0) == [ALWAYS] * 3


def test_fedscale_availability_import(tmp_path):
    path = tmp_path / "avail.json"
    path.write_text(json.dumps({"7": {"active": [0, 50], "inactive": [20, 80], "finish_time": 100},
                                "9": {"active": [10], "inactive": [30]}}))
    a, b, c = load_fedscale(path, 3)
    assert a.online(110) and not a.online(130) and a.offline_at(55) == 80
    assert b.online(15) and not b.online(35) and b.next_online(35) == math.inf  # no finish_time: no repeat
    assert c == a  # the fleet cycles over the file's entries


@pytest.mark.parametrize(("content", "message"), [
    ("not json", r"avail.json: line 1: not JSON"),
    ("{}", "expected a non-empty object"),
    ('{"1": {"active": [0]}}', "client 1: expected an object with 'active' and 'inactive'"),
    ('{"1": {"active": [0, 5], "inactive": [10]}}', "client 1: 'active' and 'inactive' must be lists of equal length"),
    ('{"1": {"active": [10], "inactive": [5]}}', "client 1: windows must be increasing"),
    ('{"1": {"active": ["x"], "inactive": [5]}}', "must hold numbers"),
    ('{"1": {"active": [0], "inactive": [500], "finish_time": 100}}', "ends after finish_time"),
])
def test_bad_fedscale_files_name_file_and_client(tmp_path, content, message):
    path = tmp_path / "avail.json"
    path.write_text(content)
    with pytest.raises(AvailabilityError, match=message):
        load_fedscale(path, 2)


def test_a_scenario_with_a_bad_fedscale_file_is_refused_by_name(tmp_path):
    from pathlib import Path

    from testbed.config.scenario import ScenarioError, load_scenario

    smoke = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
    bad = tmp_path / "avail.json"
    bad.write_text('{"1": {"active": [10], "inactive": [5]}}')
    # the file at fault first, then who named it
    with pytest.raises(ScenarioError, match=r"^.*avail.json: client 1: windows .*\(from .*smoke.yaml availability.path\)$"):
        load_scenario(smoke, ["availability.kind=fedscale", f"availability.path={bad}"])
    with pytest.raises(ScenarioError, match="smoke.yaml: availability.path: file not found: /nope.json"):
        load_scenario(smoke, ["availability.kind=fedscale", "availability.path=/nope.json"])


def test_reversed_link_outages_are_refused_by_name():
    from pathlib import Path

    from testbed.config.scenario import ScenarioError, load_scenario

    smoke = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.yaml"
    with pytest.raises(ScenarioError, match=r"network.outages: each outage is \[t1, t2\] with 0 <= t1 < t2"):
        load_scenario(smoke, ["network.outages=[[5, 2]]"])


def test_fleet_schedules_answer_as_each_schedule_does():
    """The vectorised fleet view gives Schedule.online's answer, boundaries included."""
    import numpy as np

    from testbed.config.availability import ALWAYS, FleetSchedules, Schedule, diurnal

    plans = [*diurnal(300, period_s=86400.0, on_fraction=0.4, seed=3), ALWAYS, Schedule((), 100.0),
             Schedule(((0.0, 5.0), (3.0, 9.0)), 20.0), Schedule(((10.0, 20.0), (30.0, 40.0)))]
    fleet = FleetSchedules(plans)
    assert fleet.own == [302]  # the overlapping windows are asked one by one
    edges = [w[0] + k * 86400 + d for s in plans[:40] for w in s.windows for k in range(2) for d in (-1e-9, 0.0)]
    times = [*np.random.default_rng(0).uniform(0, 5 * 86400, 400).tolist(), *edges, 15.0, 35.0, 50.0]
    for t in times:
        assert fleet.online(t).tolist() == [s.online(t) for s in plans]


def test_periodic_offline_windows_equal_the_walked_ones():
    import numpy as np

    from testbed.config.availability import Schedule, diurnal

    rng = np.random.default_rng(0)
    plans = diurnal(50, period_s=3600.0, on_fraction=0.3, seed=1)
    for _ in range(300):
        period = float(rng.choice([100.0, 777.7]))
        points = np.sort(rng.uniform(0, period, 2 * int(rng.integers(1, 4))))
        plans.append(Schedule(tuple((float(a), float(b)) for a, b in points.reshape(-1, 2)), period))
    for s in plans:
        assert s._periodic_offline_windows(5.5 * s.period_s) == s._walked_offline_windows(5.5 * s.period_s)
