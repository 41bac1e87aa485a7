"""Framework registry: a name in the scenario -> the class that implements it.

Entries are import paths, so that naming a framework does not import its heavy code.
"""

from __future__ import annotations

from importlib import import_module

_FRAMEWORKS: dict[str, str] = {
    "fedllm": "frameworks.fedllm:FedLLM",
    "kd": "frameworks.kd_fedllm:KDFedLLM",
    "split": "frameworks.split_fedllm:SplitFedLLM",
}


def framework_names() -> list[str]:
    return sorted(_FRAMEWORKS)


def framework_module(name: str) -> str:
    """The module that implements framework `name` (its clients too), without importing it."""
    if name not in _FRAMEWORKS:
        raise KeyError(f"unknown framework '{name}'; supported: {', '.join(framework_names())}")
    return _FRAMEWORKS[name].partition(":")[0]


def framework_class(name: str) -> type:
    if name not in _FRAMEWORKS:
        raise KeyError(f"unknown framework '{name}'; supported: {', '.join(framework_names())}")
    module, _, attr = _FRAMEWORKS[name].partition(":")
    return getattr(import_module(module), attr)
