"""Fuzzing `testbed validate` with every kind of scenario input (strategies in tests/fuzzing.py):
mutated bundled scenarios, files that are not scenarios, odd paths, `--set` strings, FedScale
availability files, datasets and model config.json files. Each example either validates
(exit 0) or is refused with exit 2 and one ``error: file: field: problem`` line; an exception,
another exit, several lines or the CLI's last-resort guard answering all fail the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from tests.fuzzing import (
    assert_clean,
    availability_bytes,
    availability_case,
    dataset_case,
    dataset_file,
    model_config,
    model_config_case,
    mutated_scenario,
    odd_path_case,
    odd_paths,
    scenario_bytes,
    scenario_bytes_case,
    scenario_case,
    set_case,
    set_strings,
    share,
    tiny_config,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, assets) -> Path:
    """One folder for the module's examples (each overwrites its files); the assets built."""
    return tmp_path_factory.mktemp("fuzz")


def test_mutated_bundled_scenarios_validate_or_are_refused_in_one_line(workdir: Path) -> None:
    @share(2 / 3)
    @given(mutated_scenario())
    def check(raw) -> None:
        assert_clean(scenario_case(raw, workdir), raw)

    check()


def test_files_that_are_not_scenarios_are_refused_in_one_line(workdir: Path) -> None:
    @share(2 / 3)
    @given(scenario_bytes)
    def check(content: bytes) -> None:
        outcome = scenario_bytes_case(content, workdir)
        assert_clean(outcome, content)
        assert outcome.code == 2 or content.strip()  # an empty file is no scenario

    check()


def test_odd_paths_are_refused_in_one_line(workdir: Path) -> None:
    folder = workdir / "odd"  # none of the scenarios the other tests leave (`s.yaml/` is the path s.yaml)
    folder.mkdir(exist_ok=True)

    @share(1 / 3)
    @given(odd_paths)
    def check(name: str) -> None:
        outcome = odd_path_case(name, folder)
        assert_clean(outcome, name)
        assert outcome.code == 2  # none of them is a scenario file

    check()


def test_set_strings_are_applied_or_refused_in_one_line(workdir: Path) -> None:
    @share(1)
    @given(set_strings())
    def check(assignments: list[str]) -> None:
        assert_clean(set_case(assignments, workdir), assignments)

    check()


def test_availability_files_are_read_or_refused_in_one_line(workdir: Path) -> None:
    @share(1)
    @given(availability_bytes())
    def check(content: bytes) -> None:
        assert_clean(availability_case(content, workdir), content)

    check()


def test_datasets_are_read_or_refused_in_one_line(workdir: Path) -> None:
    @share(2 / 3)
    @given(dataset_file())
    def check(example: tuple[str, bytes]) -> None:
        assert_clean(dataset_case(example, workdir), example)

    check()


def test_model_configs_are_read_or_refused_in_one_line(workdir: Path) -> None:
    @share(2 / 3)
    @given(model_config(tiny_config()))
    def check(content: bytes) -> None:
        assert_clean(model_config_case(content, workdir), content)

    check()


def test_instruction_datasets_are_read_or_refused_in_one_line(workdir: Path) -> None:
    """The same files read as instruction data (the columns then count for nothing but a chat
    list, Alpaca's or prompt/response), through `testbed validate`."""
    from tests.fuzzing import smoke_with, validate

    @share(1 / 3)
    @given(dataset_file())
    def check(example: tuple[str, bytes]) -> None:
        suffix, content = example
        path = workdir / f"data{suffix}"
        path.write_bytes(content.replace(b"text", b"prompt").replace(b"label", b"response"))
        scenario = smoke_with(workdir, task={"kind": "instruction"},
                              dataset={"path": str(path), "max_tokens": 32, "test_size": 20})
        assert_clean(validate(scenario), example)

    check()
