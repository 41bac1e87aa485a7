"""The optional parts of an install (pyproject.toml's extras) and the one-line error that a
missing one gives.

The core install runs a scenario on the process backend with fedllm, split and kd (its student
on torch). What more a scenario or a command uses comes with an extra, and each module of an
extra is imported inside the function that needs it, through :func:`require`, so that the core
install imports none of them::

    pip install 'fedge-testbed[onnx]'     # one extra
    pip install 'fedge-testbed[all]'      # every one (what `make setup` installs, pinned)

In testbed.config, the lowest layer of testbed, and it imports nothing of the project: every
layer may use it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

PACKAGE = "fedge-testbed"

# extra -> the top-level modules it provides, and what uses them
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "docker": (("docker",), "emulation.backend: docker"),
    "onnx": (("onnx", "onnxruntime", "onnxscript"), "kd's student on onnxruntime (framework.kd.onnx: true)"),
    "gguf": (("gguf",), "building the bundled models (smollm2-135m, tiny-llama) from SmolLM2's GGUF file"),
    "report": (("plotly",), "testbed report"),
    "ray": (("ray",), "emulation.backend: ray"),
    "tracking": (("mlflow", "sqlalchemy", "alembic"), "output.tracking: mlflow"),
}
_EXTRA_OF = {module: extra for extra, (modules, _) in EXTRAS.items() for module in modules}


def install_hint(extra: str) -> str:
    """``pip install 'fedge-testbed[EXTRA]'``."""
    return f"pip install '{PACKAGE}[{extra}]'"


class MissingExtra(ImportError):
    """A module of an extra that is not installed; the message is one line that names the
    extra and the command that installs it."""

    def __init__(self, extra: str, module: str, purpose: str) -> None:
        self.extra = extra
        super().__init__(f"{purpose} needs the '{extra}' extra ({module} is not installed): {install_hint(extra)}",
                         name=module)


def extra_of(module: str) -> str | None:
    """The extra that provides `module` (or its top-level package), None for any other."""
    return _EXTRA_OF.get(module.partition(".")[0])


def require(module: str, purpose: str | None = None) -> ModuleType:
    """``import module``, or MissingExtra naming its extra; `purpose` says what needs it
    (default: what the extra is for)."""
    extra = extra_of(module)
    if extra is None:
        raise ValueError(f"{module} is not a module of an extra (testbed.config.extras.EXTRAS)")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or module).partition(".")[0]
        if extra_of(missing) is None:  # the module is there but one of its own dependencies is not
            raise
        raise MissingExtra(extra, missing, purpose or EXTRAS[extra][1]) from exc


def absent(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here (found nowhere); [] when it is
    installed. Looks, imports nothing."""
    missing = []
    for module in EXTRAS[extra][0]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def check(extra: str, purpose: str | None = None) -> None:
    """MissingExtra where a module of `extra` is absent (looks, imports nothing)."""
    missing = absent(extra)
    if missing:
        raise MissingExtra(extra, missing[0], purpose or EXTRAS[extra][1])


def missing_extra_message(exc: BaseException) -> str | None:
    """The one-line message for an ImportError of a module of an extra (a MissingExtra, or
    a plain ModuleNotFoundError of, e.g., plotly), None for any other exception."""
    if isinstance(exc, MissingExtra):
        return str(exc)
    if isinstance(exc, ImportError) and exc.name:
        extra = extra_of(exc.name)
        if extra is not None:
            return str(MissingExtra(extra, exc.name.partition(".")[0], EXTRAS[extra][1]))
    return None
