"""The scenario's data, built the same way in the server and in every client worker.

Splits and partitions depend only on the dataset and the seed, so each process rebuilds
them instead of receiving copies.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from testbed.config.scenario import Scenario
from testbed.ml.data import Example, Splits, TextDataset, load_dataset, partition_dataset, split_dataset


@dataclass(frozen=True)
class TaskData:
    dataset: TextDataset
    splits: Splits
    client_indices: tuple[tuple[int, ...], ...]  # training examples of client i
    notice: str | None = None  # one line for the run's log (e.g. dirichlet asked of data without groups)

    @cached_property
    def labels_of(self) -> tuple[str, ...]:
        return tuple(ex.label for ex in self.dataset.examples)

    def texts(self, indices: tuple[int, ...]) -> list[str]:
        return [self.dataset.examples[i].text for i in indices]

    def labels(self, indices: tuple[int, ...]) -> list[str]:
        return [self.dataset.examples[i].label for i in indices]

    def at(self, indices: tuple[int, ...]) -> list[Example]:
        """The examples at `indices`, in that order."""
        return [self.dataset.examples[i] for i in indices]


def load_task_dataset(scenario: Scenario) -> TextDataset:
    cfg = scenario.dataset  # a file's `path` wins over a bundled `name` (as testbed validate reads it)
    return load_dataset(name=None if cfg.path else cfg.name, path=cfg.path, text=cfg.text, label=cfg.label, kind=scenario.task.kind,
                        columns=cfg.columns)


_BUILT: dict[str, TaskData] = {}  # a process builds each scenario's data once (a pool worker hosts several clients)


def _data_key(scenario: Scenario) -> str:
    """What the task data depends on (the task kind reads other columns); a file dataset's size
    and modification time included."""
    cfg = scenario.dataset
    stamp = None
    if cfg.path:
        with contextlib.suppress(OSError):
            st = Path(cfg.path).stat()
            stamp = (st.st_size, st.st_mtime_ns)
    return json.dumps([scenario.task.kind, cfg.model_dump(mode="json"), scenario.partition.model_dump(mode="json"),
                       scenario.seed, scenario.n_clients, stamp])


def build_task_data(scenario: Scenario, dataset: TextDataset | None = None) -> TaskData:
    if dataset is not None:
        return _build(scenario, dataset)
    key = _data_key(scenario)
    if key not in _BUILT:
        if len(_BUILT) >= 4:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = _build(scenario, load_task_dataset(scenario))
    return _BUILT[key]


def _build(scenario: Scenario, ds: TextDataset) -> TaskData:
    """Splits stratified and partitions grouped by the examples' groups (testbed.ml.data); the
    notice says where dirichlet fell back to iid (data without groups)."""
    splits = split_dataset(
        ds, test_size=scenario.dataset.test_size, public_size=scenario.dataset.public_size, seed=scenario.seed
    )
    parts, notice = partition_dataset(
        ds,
        splits.train,
        n_clients=scenario.n_clients,
        kind=scenario.partition.kind,
        alpha=scenario.partition.alpha,
        seed=scenario.seed,
        min_per_client=scenario.partition.min_per_client,
    )
    return TaskData(dataset=ds, splits=splits, client_indices=tuple(tuple(p) for p in parts), notice=notice)
