"""pyproject's extras, testbed.config.extras' table and requirements.txt's pins agree.

pip's own resolve of them (the core install alone, `.[all]` beside Flower) is
.ci/flower_coinstall.sh, which needs PyPI; this checks, offline, what the files say."""

from __future__ import annotations

import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from testbed.config.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[3]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_every_extra_is_in_pyproject_and_all_is_their_union():
    extras = PROJECT["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    (everything,) = extras["all"]
    assert Requirement(everything).name == "fedge-testbed" and Requirement(everything).extras == set(EXTRAS)


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_each_module_of_an_extra_comes_with_that_extra_and_not_the_core(extra):
    dists = packages_distributions()
    listed = _names(PROJECT["optional-dependencies"][extra])
    core = _names(PROJECT["dependencies"])
    for module in EXTRAS[extra][0]:
        provided = {canonicalize_name(d) for d in dists.get(module, [])}
        assert provided, f"{module} is not installed here (make setup installs every extra)"
        assert provided & listed, f"{module} ({provided}) is not in pyproject's extra {extra!r}: {listed}"
        assert not provided & core, f"{module} is in the core dependencies"


def test_requirements_pins_the_core_and_every_extra_within_the_ranges():
    pins = _pins()
    wanted = list(PROJECT["dependencies"]) + [r for extra in EXTRAS for r in PROJECT["optional-dependencies"][extra]]
    wanted += PROJECT["optional-dependencies"]["test"]
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.txt has no pin for {req.name} ({line})"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.txt pins {req.name}=={pins[name]}, outside pyproject's {line}"


def test_the_core_allows_the_rich_that_flower_needs():
    (rich,) = [Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == "rich"]
    assert rich.specifier.contains("14.3.4") and rich.specifier.contains(_pins()["rich"])  # flwr 1.42: rich<15
