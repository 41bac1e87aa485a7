"""``output``: where a run is written, and where it is tracked.

Either the run folder alone, as text (``output: runs/smoke``), or a mapping::

    output:
      dir: runs/smoke           # the run folder (relative to the current directory)
      tracking: mlflow          # also log the run to MLflow (the `tracking` extra; docs/tracking.md)
      tracking_uri: mlruns      # the MLflow store: a folder (default: mlruns/ in the current
                                # directory) or an MLflow URI (sqlite:///..., http://...)

``os.fspath(scenario.output)`` (and ``Path(scenario.output)``) is the run folder. A scenario
that tracks nothing is written back as the text it was, so the scenario copies of run folders
read as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_serializer, model_validator

from testbed.config.node import Node

DEFAULT_DIR = "runs/scenario"
DEFAULT_TRACKING_STORE = "mlruns"


class OutputConfig(Node):
    dir: str = DEFAULT_DIR
    tracking: Literal["mlflow"] | None = None
    tracking_uri: str | None = None  # None: mlruns/ in the current directory

    @model_validator(mode="before")
    @classmethod
    def _folder_alone(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"dir": value}
        if not isinstance(value, (dict, OutputConfig)):
            raise ValueError(f"expected the run folder (text) or a mapping of dir, tracking and tracking_uri, "
                             f"got {type(value).__name__}")
        return value

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """Against the current directory, as command-line paths are (testbed.config.paths)."""
        if not value.strip():
            raise ValueError("must name a folder")
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # ~nosuchuser
            raise ValueError(f"{value!r}: no such user's home folder") from None
        return os.path.normpath(os.path.join(Path.cwd(), path))

    @field_validator("tracking_uri")
    @classmethod
    def _uri_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a folder or an MLflow tracking URI (or be left out: mlruns/ here)")
        return value

    @model_validator(mode="after")
    def _uri_needs_tracking(self) -> OutputConfig:
        if self.tracking_uri is not None and self.tracking is None:
            raise ValueError("output.tracking_uri is set but output.tracking is not (tracking: mlflow)")
        return self

    @model_serializer(mode="wrap")
    def _as_written(self, handler) -> Any:
        return self.dir if self.tracking is None else handler(self)

    def __fspath__(self) -> str:
        return self.dir

    def __str__(self) -> str:
        return self.dir


def default_output() -> OutputConfig:
    """``runs/scenario`` in the current directory."""
    return OutputConfig(dir=DEFAULT_DIR)
