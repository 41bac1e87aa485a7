"""The house rules of the layout (docs/architecture.md): small rooms, and every package a layer.

No module of the project's packages is over 400 lines and no class over 250 (from its `class`
line to its last line); the import direction itself is checked by `lint-imports`
(pyproject.toml's contracts, run by `make test`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("testbed", "frameworks", "network", "device_profiles")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
LAYERS = ("cli", "config", "sim", "backends", "host", "ml", "results")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _classes(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)]


def test_the_project_has_modules_to_check():
    assert len(_modules()) > 60


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_400_lines_and_no_class_over_250(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_MODULE_LINES})"
    for name, length in _classes(path):
        assert length <= MAX_CLASS_LINES, f"{path.relative_to(ROOT)}: class {name} is {length} lines"


def test_testbed_is_one_package_per_layer():
    flat = sorted(p.name for p in (ROOT / "testbed").glob("*.py") if p.name not in {"__init__.py", "protocol.py"})
    assert flat == [], f"modules outside the layer packages: {flat}"
    for layer in LAYERS:
        assert (ROOT / "testbed" / layer / "__init__.py").is_file(), layer


def test_the_size_check_catches_a_long_class(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES))
    path = tmp_path / "big.py"
    path.write_text(f"class Big:\n{body}\n")
    assert _classes(path) == [("Big", MAX_CLASS_LINES + 1)]
