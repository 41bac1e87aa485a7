"""Scenario sections `dataset` (where the examples come from) and `partition` (how clients share them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from testbed.config.node import Node


class DatasetConfig(Node):
    name: str | None = "bbc-news"  # a bundled dataset (bbc-news), or null when `path` is given
    path: str | None = None  # bring your own data: a CSV/TSV/JSONL file
    text: str = "text"  # text column of `path`
    label: str = "label"  # label column of `path`
    max_tokens: int = Field(96, gt=0)  # article tokens kept per example (sequence length)
    test_size: int = Field(150, gt=0)  # held-out examples for evaluation (fixed per seed)
    public_size: int | None = Field(None, ge=0)  # unlabeled public examples; null: 200 under kd, else 0

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if self.path is not None:
            return self.model_copy(update={"name": None}) if self.name == "bbc-news" else self
        if self.name is None:
            raise ValueError("give a dataset `name` (bbc-news) or a `path` to a CSV/JSONL file")
        return self


class PartitionConfig(Node):
    kind: Literal["iid", "dirichlet"] = "dirichlet"  # how training data is split over clients
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration (smaller = more skewed labels)
    min_per_client: int = Field(8, ge=1)  # every client gets at least this many examples
