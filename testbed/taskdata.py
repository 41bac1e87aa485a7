"""The scenario's data, built the same way in the server and in every client worker.

Splits and partitions depend only on the dataset and the seed, so each process rebuilds
them instead of receiving copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from testbed.data import Splits, TextDataset, load_dataset, partition, split_dataset
from testbed.scenario import Scenario


@dataclass(frozen=True)
class TaskData:
    dataset: TextDataset
    splits: Splits
    client_indices: tuple[tuple[int, ...], ...]  # training examples of client i

    @cached_property
    def labels_of(self) -> tuple[str, ...]:
        return tuple(ex.label for ex in self.dataset.examples)

    def texts(self, indices: tuple[int, ...]) -> list[str]:
        return [self.dataset.examples[i].text for i in indices]

    def labels(self, indices: tuple[int, ...]) -> list[str]:
        return [self.dataset.examples[i].label for i in indices]


def load_task_dataset(scenario: Scenario) -> TextDataset:
    cfg = scenario.dataset
    return load_dataset(name=cfg.name, path=cfg.path, text=cfg.text, label=cfg.label)


def build_task_data(scenario: Scenario, dataset: TextDataset | None = None) -> TaskData:
    ds = dataset if dataset is not None else load_task_dataset(scenario)
    splits = split_dataset(
        ds, test_size=scenario.dataset.test_size, public_size=scenario.dataset.public_size, seed=scenario.seed
    )
    labels = [ex.label for ex in ds.examples]
    parts = partition(
        labels,
        splits.train,
        n_clients=scenario.n_clients,
        kind=scenario.partition.kind,
        alpha=scenario.partition.alpha,
        seed=scenario.seed,
        min_per_client=scenario.partition.min_per_client,
    )
    return TaskData(dataset=ds, splits=splits, client_indices=tuple(tuple(p) for p in parts))
