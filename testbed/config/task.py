"""Scenario section `task`: what the model learns from the data, and how an example becomes text.

- ``classification`` (the default): a text and a label; the prompt is ``task.prompt`` with the
  text in place of ``{text}``, followed by the label; the loss and accuracy are over the
  label's tokens.
- ``instruction``: a prompt and a response; the loss covers the response tokens only.
  ``task.template`` renders the prompt: ``chat`` with the model's chat template, ``plain``
  with ``task.prompt`` (``{prompt}`` in place of the user's prompt), ``auto`` chat where the
  model has a chat template, else plain.
- ``language_modeling``: plain texts, joined and cut into fixed-length blocks; loss on every token.
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import field_validator, model_validator

from testbed.config.node import Node

TaskKind = Literal["classification", "instruction", "language_modeling"]
CLASSIFICATION_PROMPT = "Article: {text}\nTopic:"
INSTRUCTION_PROMPT = "### Instruction:\n{prompt}\n\n### Response:\n"
PLACEHOLDERS = ("text", "prompt")


def placeholder_of(template: str) -> str:
    """The one placeholder ({text} or {prompt}) a prompt template holds; ValueError otherwise."""
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write literal braces as {{{{ and }}}}") from None
    if len(fields) != 1 or fields[0] not in PLACEHOLDERS:
        raise ValueError(f"needs exactly one placeholder, {{text}} or {{prompt}}, found {fields or 'none'}")
    return fields[0]


class TaskConfig(Node):
    multiline_fields = frozenset({"prompt"})
    kind: TaskKind = "classification"
    prompt: str | None = None  # null: "Article: {text}\nTopic:" (classification), an Alpaca-style prompt (plain)
    template: Literal["auto", "chat", "plain"] = "auto"  # instruction: how a prompt is rendered

    @field_validator("prompt")
    @classmethod
    def _one_placeholder(cls, v: str | None) -> str | None:
        if v is not None:
            placeholder_of(v)
        return v

    @model_validator(mode="after")
    def _prompt_for_kind(self) -> TaskConfig:
        if self.prompt is not None and self.kind == "language_modeling":
            raise ValueError("task.prompt applies to classification and instruction, not language_modeling")
        return self

    @property
    def generative(self) -> bool:
        return self.kind != "classification"

    def prompt_template(self) -> str:
        """The plain prompt template of this kind (classification's, or an instruction's under plain)."""
        if self.prompt is not None:
            return self.prompt
        return CLASSIFICATION_PROMPT if self.kind == "classification" else INSTRUCTION_PROMPT
