"""A scenario's framework name -> the class that implements it, imported on first use.

The names and their import paths are registered in testbed.config.registry (code, never a
file or a message), so the scenario can validate a name without importing framework code.
"""

from __future__ import annotations

from importlib import import_module

from testbed.config.registry import FRAMEWORKS, framework_names
from testbed.protocol import Framework


def framework_class(name: str) -> type[Framework]:
    if name not in FRAMEWORKS:
        raise KeyError(f"unknown framework '{name}'; supported: {', '.join(framework_names())}")
    module, _, attr = FRAMEWORKS[name].partition(":")
    return getattr(import_module(module), attr)
