"""Whether this install has the extras a scenario needs (testbed.config.extras), checked with the
scenario's other checks before anything starts, so that a core install says at once, in one
``file: field: problem`` line, which extra to install: ``testbed validate`` and ``testbed run``
exit 2 with it. Looks for the modules, imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from testbed.config.node import ScenarioError
from testbed.config.scenario import Scenario
from testbed.config.extras import absent, install_hint
from testbed.ml.assets import MODEL_NAMES, builds_from_gguf


@dataclass(frozen=True)
class ExtraUse:
    """A use of an extra: the field that asks for it, when it does, and what else would do."""

    extra: str
    field: str
    wants: Callable[[Scenario], bool]
    what: Callable[[Scenario], str]
    instead: str = ""  # "or ...": another way, said after the install command


USES = (
    ExtraUse("docker", "emulation.backend", lambda s: s.emulation.backend == "docker", lambda s: "docker"),
    ExtraUse("ray", "emulation.backend", lambda s: s.emulation.backend == "ray", lambda s: "ray"),
    ExtraUse("onnx", "framework.kd.onnx", lambda s: s.framework.name == "kd" and s.framework.kd.onnx,
             lambda s: "true (kd's student on onnxruntime)", instead="or set framework.kd.onnx: false to run it on torch"),
    ExtraUse("tracking", "output.tracking", lambda s: s.output.tracking == "mlflow", lambda s: "mlflow"),
    ExtraUse("gguf", "model", lambda s: s.model in MODEL_NAMES and builds_from_gguf(s.model),
             lambda s: f"{s.model} (not built yet: it is converted from SmolLM2's GGUF file)",
             instead="or name a local Hugging Face model folder"),
)


def check_extras(scenario: Scenario, source: str) -> None:
    """ScenarioError naming the first extra the scenario needs that is not installed."""
    for use in USES:
        if not use.wants(scenario):
            continue
        missing = absent(use.extra)
        if missing:
            also = f", {use.instead}" if use.instead else ""
            raise ScenarioError.at(source, use.field, f"{use.what(scenario)} needs the '{use.extra}' extra "
                                                      f"({missing[0]} is not installed): {install_hint(use.extra)}{also}")
