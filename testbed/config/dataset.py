"""Scenario sections `dataset` (where the examples come from) and `partition` (how clients share them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from testbed.config.node import Node


class ColumnsConfig(Node):
    """Column (key) names of a data file, where they differ from the recognised ones: text/label
    (classification), Alpaca's instruction/input/output or prompt/response (instruction), a chat
    `messages` list of {role, content}, text (language modelling)."""

    text: str | None = None  # null: dataset.text
    label: str | None = None  # null: dataset.label
    prompt: str | None = None  # null: a `messages` list, else Alpaca's `instruction` (+ `input`), else `prompt`
    input: str | None = None  # an Alpaca-style context appended to the prompt (null: `input` where present)
    response: str | None = None  # null: `response`, else Alpaca's `output`
    messages: str | None = None  # null: `messages` where present
    group: str | None = None  # what the dirichlet partition groups by (null: the label; BBC: the topic)


class DatasetConfig(Node):
    name: str | None = "bbc-news"  # a bundled dataset (bbc-news, bbc-headlines), or null when `path` is given
    path: str | None = None  # bring your own data: a CSV/TSV/JSONL/JSON/Parquet file
    text: str = "text"  # text column of `path`
    label: str = "label"  # label column of `path`
    columns: ColumnsConfig = ColumnsConfig()
    max_tokens: int = Field(96, gt=0)  # tokens kept per example: the text (classification), the whole sequence
    max_prompt_tokens: int | None = Field(None, gt=0)  # instruction: prompt tokens kept (null: as max_tokens allows)
    max_response_tokens: int | None = Field(None, gt=0)  # instruction: response tokens kept (null: as max_tokens allows)
    test_size: int = Field(150, gt=0)  # held-out examples for evaluation (fixed per seed)
    public_size: int | None = Field(None, ge=0)  # unlabeled public examples; null: 200 under kd, else 0

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if self.path is not None:
            return self.model_copy(update={"name": None})  # a file replaces the bundled default
        if self.name is None:
            raise ValueError("give a dataset `name` (bbc-news) or a `path` to a CSV/JSONL file")
        return self


class PartitionConfig(Node):
    kind: Literal["iid", "dirichlet"] = "dirichlet"  # how training data is split over clients
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration (smaller = more skewed labels)
    min_per_client: int = Field(8, ge=1)  # every client gets at least this many examples
