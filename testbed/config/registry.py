"""The framework names a scenario may give, and the module implementing each (its clients too),
as import paths: validating a scenario, or preloading a worker, imports no framework code.
testbed.sim.frameworks turns a name into its class."""

from __future__ import annotations

FRAMEWORKS: dict[str, str] = {
    "fedllm": "frameworks.fedllm:FedLLM",
    "kd": "frameworks.kd.framework:KDFedLLM",
    "split": "frameworks.split.framework:SplitFedLLM",
}


def framework_names() -> list[str]:
    return sorted(FRAMEWORKS)


def framework_module(name: str) -> str:
    """The module that implements framework `name` (its clients too), without importing it."""
    if name not in FRAMEWORKS:
        raise KeyError(f"unknown framework '{name}'; supported: {', '.join(framework_names())}")
    return FRAMEWORKS[name].partition(":")[0]
