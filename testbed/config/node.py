"""The base of every scenario node, and the error every scenario problem is reported as."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ScenarioError(ValueError):
    """Bad scenario input; the message reads ``file: field: problem``."""


class Node(BaseModel):
    """A frozen scenario section that rejects unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")
