"""Scenario loading: overrides, frozen types, and `file: field: problem` errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from testbed.cli.main import main
from testbed.config.scenario import ScenarioError, apply_override, load_scenario

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(QUICKSTART.read_text())
    mutate(raw)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_scenarios_validate():
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        scenario = load_scenario(path)
        assert scenario.n_clients >= 2, path


def test_overrides_reach_nested_fields_and_list_items():
    s = load_scenario(QUICKSTART, ["framework.rounds=5", "fleet.0.count=3", "framework.lora.targets=[q_proj]",
                                   "dataset.max_tokens=64"])
    assert s.framework.rounds == 5
    assert s.fleet[0].count == 3
    assert s.n_clients == 6
    assert s.framework.lora.targets == ("q_proj",)
    assert s.dataset.max_tokens == 64


def test_scenario_is_frozen():
    s = load_scenario(QUICKSTART)
    with pytest.raises(ValidationError):
        s.framework.rounds = 9


def test_override_bad_index_names_the_key():
    raw = {"fleet": [{"device": "pixel-7", "link": "lte"}]}
    with pytest.raises(ScenarioError, match="fleet.5.count"):
        apply_override(raw, "fleet.5.count=2")
    with pytest.raises(ScenarioError, match="expected key=value"):
        apply_override(raw, "fleet")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["framework"].update(learning_rate=1), r"framework.learning_rate: unknown key"),
        (lambda r: r["server"]["link"].update(rate_mbps=-5), r"server.link.rate_mbps: Input should be greater than 0"),
        (lambda r: r["fleet"][1].update(device="nokia-3310"), r"fleet.1.device: unknown device 'nokia-3310'"),
        (lambda r: r["fleet"][0].update(link="carrier-pigeon"), r"fleet.0.link: unknown link 'carrier-pigeon'"),
        (lambda r: r["fleet"][0].update(link={"down_mbps": 5, "up_mbps": -1}), r"fleet.0.link.up_mbps: Input should be greater than 0"),
        (lambda r: r.update(dataset={"path": "/no/such/file.csv"}), r"dataset.path: file not found: /no/such/file.csv"),
        (lambda r: r["framework"].update(name="gossip"), r"framework.name: unknown framework 'gossip'; supported: fedllm"),
        (lambda r: r["framework"].update(clients_per_round=50), r"exceeds the fleet size 4"),
    ],
)
def test_bad_input_is_named(tmp_path, mutate, expected):
    path = _write(tmp_path, mutate)
    with pytest.raises(ScenarioError, match=expected) as info:
        load_scenario(path)
    assert str(info.value).startswith(str(path) + ":")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["framework"].update(bogus=1), "framework.bogus: unknown key"),
        (lambda r: r["server"]["link"].update(rate_mbps=-1), "server.link.rate_mbps"),
        (lambda r: r["fleet"][0].update(device="nokia-3310"), "fleet.0.device: unknown device"),
        (lambda r: r["dataset"].update(path="missing.csv"), "dataset.path: file not found"),
    ],
)
def test_validate_command_exits_2_naming_the_field(tmp_path, capsys, mutate, expected):
    path = _write(tmp_path, mutate)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert str(path) in err


def test_validate_command_accepts_quickstart(capsys):
    assert main(["validate", str(QUICKSTART), "--set", "framework.rounds=2"]) == 0
    assert "2 rounds" in capsys.readouterr().out


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_scenario(bad)
