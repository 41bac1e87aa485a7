"""`output`: a run folder as text, or a mapping with tracking; written back as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from testbed.config.output import OutputConfig
from testbed.config.scenario import Scenario, ScenarioError, load_scenario

SMOKE = Path(__file__).resolve().parents[3] / "scenarios" / "smoke.yaml"


def test_text_is_the_run_folder_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scenario = load_scenario(SMOKE)
    assert scenario.output == OutputConfig(dir=str(tmp_path / "runs" / "smoke"))
    assert os.fspath(scenario.output) == str(Path(scenario.output)) == str(tmp_path / "runs" / "smoke")
    assert scenario.output.tracking is None and scenario.output.tracking_uri is None
    assert scenario.model_dump(mode="json")["output"] == str(tmp_path / "runs" / "smoke")  # as it was written
    fleet = [{"device": "pixel-7", "link": "lte"}] * 4
    assert Scenario(fleet=fleet).output.dir == str(tmp_path / "runs" / "scenario")


def test_a_mapping_tracks_and_reads_back_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scenario = load_scenario(SMOKE, ["output={dir: out/a, tracking: mlflow, tracking_uri: store}"])
    assert (scenario.output.dir, scenario.output.tracking, scenario.output.tracking_uri) == (
        str(tmp_path / "out" / "a"), "mlflow", "store")
    dumped = scenario.model_dump(mode="json")["output"]
    assert dumped == {"dir": str(tmp_path / "out" / "a"), "tracking": "mlflow", "tracking_uri": "store"}
    assert Scenario.model_validate(yaml.safe_load(yaml.safe_dump(scenario.model_dump(mode="json")))) == scenario


@pytest.mark.parametrize(("value", "problem"), [
    ("{dir: r, tracking: wandb}", "output.tracking"),
    ("{dir: r, tracking_uri: store}", "output.tracking_uri is set but output.tracking is not"),
    ("{dir: r, tracking: mlflow, tracking_uri: ''}", "output.tracking_uri"),
    ("{dir: ''}", "output.dir"),
    ("{dir: r, track: mlflow}", "output.track"),
])
def test_bad_output_is_one_line_naming_the_field(value, problem):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(SMOKE, [f"output={value}"])
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_a_text_output_takes_set_keys_beside_its_folder(tmp_path, monkeypatch):
    """`--set output.tracking=mlflow` on a scenario whose output is text: the folder stays."""
    monkeypatch.chdir(tmp_path)
    scenario = load_scenario(SMOKE, ["output.tracking=mlflow"])
    assert (scenario.output.dir, scenario.output.tracking) == (str(tmp_path / "runs" / "smoke"), "mlflow")
    scenario = load_scenario(SMOKE, ["output=elsewhere", "output.tracking_uri=store", "output.tracking=mlflow"])
    assert (scenario.output.dir, scenario.output.tracking_uri) == (str(tmp_path / "elsewhere"), "store")
