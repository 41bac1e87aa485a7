"""Paths in a scenario: a file's paths are relative to its folder, `output`, `--out` and `--set`
values to the current directory, bundled names are never paths, and the validated scenario
holds every path absolute (testbed/config/paths.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from testbed.config.paths import BUNDLED_MODELS
from testbed.config.scenario import Scenario, ScenarioError, load_scenario, validate_raw
from tests.fuzzing import run_cli
from tests.testbed.scenario_folder import scenario_in, write_inputs


@pytest.fixture
def moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the scenario, in tmp/project with its inputs; the current directory, tmp/elsewhere)."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    write_inputs(project)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return scenario_in(project), elsewhere


def test_a_files_paths_resolve_against_its_folder_from_any_directory(moved) -> None:
    path, cwd = moved
    project = path.parent
    scenario = load_scenario(Path("..") / "project" / "scenario.yaml")
    assert scenario.dataset.path == str(project / "data" / "news.csv")
    assert scenario.fleet[0].link.trace_up == str(project / "traces" / "cell.up")
    assert scenario.fleet[0].link.trace_down == str(project / "traces" / "cell.down")  # ./ folded
    assert scenario.availability.path == str(project / "avail.json")
    assert os.fspath(scenario.output) == str(cwd / "runs" / "moved")  # the run folder: the current directory's
    outcome = run_cli(["validate", "../project/scenario.yaml"])
    assert outcome.code == 0, outcome.err


def test_set_and_output_resolve_against_the_current_directory(moved) -> None:
    path, cwd = moved
    (cwd / "mine").mkdir()
    shutil.copy(path.parent / "traces" / "cell.up", cwd / "mine" / "other.up")
    scenario = load_scenario(path, ["fleet.0.link.trace_up=mine/other.up", "output=out/here"])
    assert scenario.fleet[0].link.trace_up == str(cwd / "mine" / "other.up")
    assert scenario.fleet[0].link.trace_down == str(path.parent / "traces" / "cell.down")  # the file's, still
    assert os.fspath(scenario.output) == str(cwd / "out" / "here")
    whole = load_scenario(path, ["fleet.0.link={trace_up: mine/other.up, down_mbps: 5}"])
    assert whole.fleet[0].link.trace_up == str(cwd / "mine" / "other.up")


def test_bundled_names_are_never_paths(moved) -> None:
    path, cwd = moved
    for folder in (path.parent, cwd):  # a file or folder of the same name beside it or here changes nothing
        (folder / "lte").write_text("not a link")
        (folder / "bbc-news").mkdir()
        (folder / "tiny-llama").mkdir()
    scenario = load_scenario(scenario_in(path.parent, dataset={"name": "bbc-news"}),
                             ["fleet.1.link=lte", "model=tiny-llama"])
    assert (scenario.fleet[1].link, scenario.dataset.name, scenario.model) == ("lte", "bbc-news", "tiny-llama")
    assert load_scenario(path, ["model=org/name"]).model == "org/name"  # a hub id: no such folder


def test_a_model_folder_is_relative_to_the_scenario(moved, assets) -> None:
    path, _ = moved
    shutil.copytree(assets.tiny, path.parent / "models" / "mine")
    for spec in ("models/mine", "./models/mine"):
        assert load_scenario(scenario_in(path.parent, model=spec)).model == str(path.parent / "models" / "mine")
    outcome = run_cli(["validate", str(scenario_in(path.parent, model="./models/mine"))])
    assert outcome.code == 0, outcome.err


def test_the_bundled_model_names_are_the_assets(assets) -> None:
    from testbed.ml.assets import MODEL_NAMES

    assert BUNDLED_MODELS == MODEL_NAMES


@pytest.mark.parametrize(("field", "change", "missing"), [
    ("dataset.path", {"dataset": {"path": "data/gone.csv"}}, "data/gone.csv"),
    ("fleet.0.link.trace_up", {"fleet": [{"device": "pixel-7", "link": {"trace_up": "../traces/x.up",
                                                                         "down_mbps": 5}, "count": 3}]},
     "../traces/x.up"),
    ("availability.path", {"availability": {"kind": "fedscale", "path": "gone.json"}}, "gone.json"),
])
def test_a_missing_file_names_the_scenario_the_field_and_the_resolved_path(moved, field, change, missing) -> None:
    path, _ = moved
    scenario = scenario_in(path.parent, **change)
    resolved = (path.parent / missing).resolve()
    outcome = run_cli(["validate", "../project/scenario.yaml"])
    assert outcome.code == 2
    assert outcome.err == f"error: ../project/scenario.yaml: {field}: file not found: {resolved}\n"
    with pytest.raises(ScenarioError, match=f"^{scenario}: {field}: file not found: {resolved}$"):
        load_scenario(scenario)


def test_a_scenario_built_in_memory_resolves_against_the_current_directory(moved) -> None:
    path, cwd = moved
    raw = yaml.safe_load(path.read_text())
    shutil.copytree(path.parent / "traces", cwd / "traces")
    (cwd / "data").mkdir()
    shutil.copy(path.parent / "data" / "news.csv", cwd / "data")
    shutil.copy(path.parent / "avail.json", cwd)
    scenario = validate_raw(raw, "(memory)")
    assert scenario.dataset.path == str(cwd / "data" / "news.csv")
    assert scenario.fleet[0].link.trace_up == str(cwd / "traces" / "cell.up")
    direct = Scenario.model_validate({"fleet": [{"device": "pixel-7", "link": {"trace_up": "t.up", "down_mbps": 1},
                                                 "count": 4}],
                                      "model": "./m", "availability": {"kind": "fedscale", "path": "a.json"}})
    assert (direct.fleet[0].link.trace_up, direct.model, direct.availability.path, os.fspath(direct.output)) == (
        str(cwd / "t.up"), str(cwd / "m"), str(cwd / "a.json"), str(cwd / "runs" / "scenario"))


def test_the_recorded_scenario_reads_the_same_from_anywhere(moved, tmp_path, monkeypatch) -> None:
    """What a run folder records (scenario.yaml, all paths absolute) loads to the same scenario
    from another directory and another folder."""
    path, _ = moved
    scenario = load_scenario(path)
    copy = tmp_path / "run" / "scenario.yaml"
    copy.parent.mkdir()
    copy.write_text(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert load_scenario(copy) == scenario


def test_the_docker_backend_mounts_the_files_and_model_folder_the_scenario_names(moved, assets) -> None:
    """Relative to the scenario, they may lie outside the current directory (which the server
    container mounts): each is mounted itself."""
    from testbed.backends.docker import _scenario_files

    path, _ = moved
    shutil.copytree(assets.tiny, path.parent / "models" / "mine")
    folders = _scenario_files(load_scenario(scenario_in(path.parent, model="models/mine")))
    assert set(folders) == {path.parent / "data", path.parent / "traces", path.parent, path.parent / "models" / "mine"}
