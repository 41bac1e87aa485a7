"""The task's data: labelled texts, seeded stratified splits and client partitions.

A dataset is a tuple of ``Example(text, label)``. Splits and partitions are tuples of sorted
indices into it, so every split is reproducible from ``(dataset, seed)`` and cheap to log.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from testbed.config.files import FileProblem, input_path, read_text, regular_file
from testbed.ml.assets import bbc_news_dir

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
PartitionKind = Literal["iid", "dirichlet"]
_DIRICHLET_MAX_TRIES = 1000


class DataError(ValueError):
    """Data that cannot be loaded, split or partitioned as asked; says where and why."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class TextDataset:
    name: str  # "bbc-news", or the file name for bring-your-own data
    examples: tuple[Example, ...]
    labels: tuple[str, ...]  # sorted, unique

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def example_labels(self) -> tuple[str, ...]:
        """The label of every example, in order (what ``partition`` takes)."""
        return tuple(example.label for example in self.examples)


@dataclass(frozen=True)
class Splits:
    train: tuple[int, ...]  # sorted indices into the dataset's examples
    test: tuple[int, ...]
    public: tuple[int, ...]  # a shared unlabelled/public pool (e.g. for distillation)


# ---------------------------------------------------------------------------------------------
# Loading


def _decode(raw: bytes) -> str:
    """UTF-8 where valid, else Windows-1252 (the BBC files' '£'), else Latin-1 (never fails)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _article_text(raw: str) -> str:
    """``"<title>\\n<body>"``, each part's whitespace collapsed to single spaces."""
    title, _, body = raw.strip().partition("\n")
    body = _collapse(body)
    return f"{_collapse(title)}\n{body}" if body else _collapse(title)


def _make_dataset(name: str, examples: list[Example], where: str) -> TextDataset:
    if not examples:
        raise DataError(f"{where}: (file): no rows")
    labels = tuple(sorted({example.label for example in examples}))
    if len(labels) < 2:
        raise DataError(f"{where}: (labels): needs at least 2 distinct labels, found 1: {labels[0][:80]!r}")
    return TextDataset(name=name, examples=tuple(examples), labels=labels)


def load_bbc_news() -> TextDataset:
    """BBC News: 2,225 articles, label = topic folder (business, entertainment, politics,
    sports, tech), files read in sorted order."""
    root = bbc_news_dir()
    examples = [
        Example(text=_article_text(_decode(path.read_bytes())), label=folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(folder.glob("*.txt"))
    ]
    return _make_dataset("bbc-news", examples, str(root))


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _check_columns(where: str, found: Sequence[str], text: str, label: str) -> None:
    for role, column in (("text", text), ("label", label)):
        if column not in found:
            shown = repr(list(found)) if len(found) <= 20 else f"{list(found)[:20]!r} and {len(found) - 20} more"
            raise DataError(f"{where}: missing {role} column {column!r}; columns found: {shown}")


def _row_example(where: str, row: dict[str, Any], text: str, label: str) -> Example:
    for role, column in (("text", text), ("label", label)):
        if _is_blank(row[column]):
            raise DataError(f"{where}: empty {role} in column {column!r}")
    if not isinstance(row[text], str):
        raise DataError(f"{where}: text in column {text!r} must be a string, got {type(row[text]).__name__}")
    value = row[label]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: label in column {label!r} must be a string or a number, got {type(value).__name__}")
    return Example(text=row[text], label=str(value))


def _read_csv(path: Path, text: str, label: str) -> list[Example]:
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: (file): empty file, expected a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OverflowError) as error:
        detail = " ".join(str(error).split())[:200]
        raise DataError(f"{path}: (file): cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {detail}") from None
    _check_columns(f"{path}: (header)", [str(c) for c in frame.columns], text, label)
    rows = frame[[text, label]].to_dict("records")
    return [_row_example(f"{path}: row {i}", row, text, label) for i, row in enumerate(rows, start=1)]


def _json_objects(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for each record: a JSON array of objects, or one object per line."""
    try:
        content = read_text(path)
    except FileProblem as error:
        raise DataError(f"{error.path}: (file): {error.problem}") from None
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        records = _json(content, path, 0)
        located = [(f"{path}: item {i}", record) for i, record in enumerate(records, start=1)]
    else:
        located = [(f"{path}: line {lineno}", _json(line, path, lineno))
                   for lineno, line in enumerate(content.splitlines(), start=1) if line.strip()]
    for where, record in located:
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return located


def _json(text: str, path: Path, lineno: int) -> Any:
    """One JSON value: the whole file (lineno 0) or one line of it; DataError names the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        line = error.lineno if lineno == 0 else lineno
        raise DataError(f"{path}: line {line}: invalid JSON (column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: line {max(lineno, 1)}: invalid JSON here: nested too deeply") from None


def _read_jsonl(path: Path, text: str, label: str) -> list[Example]:
    examples = []
    for where, record in _json_objects(path):
        _check_columns(where, list(record), text, label)
        examples.append(_row_example(where, record, text, label))
    return examples


def load_table(path: str | Path, *, text: str = "text", label: str = "label") -> TextDataset:
    """Bring-your-own data: a CSV/TSV with a header, or JSON lines (one object per line).

    ``text`` and ``label`` name the columns (keys); labels become strings. Empty texts or
    labels are errors naming the row, not silently dropped.
    """
    try:
        path = input_path(path)
        suffix = path.suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise DataError(f"{path}: (file): unsupported file type {suffix or '(none)'!r}; "
                            f"expected one of {TABLE_SUFFIXES}")
        path = regular_file(path)
    except FileProblem as error:
        raise DataError(f"{error.path}: (file): {error.problem}") from None
    if path.stat().st_size == 0:
        expected = "a header row and data rows" if suffix in (".csv", ".tsv") else "one JSON object per line"
        raise DataError(f"{path}: (file): empty file, expected {expected}")
    reader = _read_csv if suffix in (".csv", ".tsv") else _read_jsonl
    return _make_dataset(path.name, reader(path, text, label), str(path))


DATASETS: dict[str, Callable[[], TextDataset]] = {"bbc-news": load_bbc_news}


def load_dataset(
    *, name: str | None = None, path: str | Path | None = None, text: str = "text", label: str = "label"
) -> TextDataset:
    """A built-in dataset by ``name`` or a table file by ``path`` (exactly one of them)."""
    if (name is None) == (path is None):
        raise DataError("give exactly one of name= (a built-in dataset) or path= (a CSV/JSONL file)")
    if path is not None:
        return load_table(path, text=text, label=label)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} (or pass path= to a CSV/JSONL file)")
    return DATASETS[name]()


# ---------------------------------------------------------------------------------------------
# Splits and partitions


def _allocate(total: int, weights: Sequence[int], caps: Sequence[int]) -> list[int]:
    """Split ``total`` into integer shares proportional to ``weights`` (largest remainder),
    each share at most its cap; ``total`` must not exceed ``sum(caps)``."""
    weight_sum = sum(weights)
    quotas = [total * w / weight_sum for w in weights]
    shares = [min(math.floor(q), cap) for q, cap in zip(quotas, caps)]
    order = sorted(range(len(weights)), key=lambda i: (math.floor(quotas[i]) - quotas[i], i))
    remaining = total - sum(shares)
    while remaining > 0:  # largest remainders first; cycles only when caps bind
        for i in order:
            if remaining > 0 and shares[i] < caps[i]:
                shares[i] += 1
                remaining -= 1
    return shares


def split_dataset(ds: TextDataset, *, test_size: int, public_size: int = 0, seed: int) -> Splits:
    """Seeded, stratified, disjoint train/test/public splits of exact sizes.

    Each label's share of ``test`` (and of ``public``) is within one example of proportional.
    """
    n = len(ds.examples)
    if test_size < 0 or public_size < 0:
        raise DataError(f"test_size ({test_size}) and public_size ({public_size}) must be >= 0")
    if n - test_size - public_size < 2:
        raise DataError(
            f"{ds.name}: test_size {test_size} + public_size {public_size} leaves {n - test_size - public_size} "
            f"training examples of {n}; need at least 2"
        )
    by_label = {lab: [i for i, e in enumerate(ds.examples) if e.label == lab] for lab in ds.labels}
    sizes = [len(by_label[lab]) for lab in ds.labels]
    test_counts = _allocate(test_size, sizes, sizes)
    public_counts = _allocate(public_size, sizes, [s - t for s, t in zip(sizes, test_counts)])
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    public: list[int] = []
    for lab, n_test, n_public in zip(ds.labels, test_counts, public_counts):
        order = rng.permutation(by_label[lab]).tolist()
        test += order[:n_test]
        public += order[n_test : n_test + n_public]
        train += order[n_test + n_public :]
    return Splits(train=tuple(sorted(train)), test=tuple(sorted(test)), public=tuple(sorted(public)))


def _check_partition_args(
    labels: Sequence[str], indices: Sequence[int], n_clients: int, alpha: float, min_per_client: int
) -> list[int]:
    if n_clients < 1:
        raise DataError(f'"n_clients" must be >= 1, got {n_clients}')
    if min_per_client < 0:
        raise DataError(f'"min_per_client" must be >= 0, got {min_per_client}')
    if not alpha > 0:
        raise DataError(f'"alpha" must be > 0, got {alpha}')
    ordered = sorted(indices)
    if len(set(ordered)) != len(ordered):
        raise DataError("indices contain duplicates")
    if ordered and not (0 <= ordered[0] and ordered[-1] < len(labels)):
        raise DataError(f"indices must lie in [0, {len(labels)}), got {ordered[0]}..{ordered[-1]}")
    if len(ordered) < n_clients * min_per_client:
        raise DataError(
            f"{len(ordered)} examples cannot give {n_clients} clients at least {min_per_client} each"
        )
    return ordered


def _iid(ordered: list[int], n_clients: int, rng: np.random.Generator) -> list[list[int]]:
    shuffled = rng.permutation(np.asarray(ordered, dtype=np.int64))
    return [chunk.tolist() for chunk in np.array_split(shuffled, n_clients)]


def _dirichlet_once(
    groups: list[np.ndarray], n_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    """One draw: each label's examples cut among clients by proportions ~ Dir(alpha)."""
    clients: list[list[int]] = [[] for _ in range(n_clients)]
    for group in groups:
        shares = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(group)).astype(np.int64)
        for client, part in zip(clients, np.split(group, cuts)):
            client += part.tolist()
    return clients


def _dirichlet(
    labels: Sequence[str], ordered: list[int], n_clients: int, alpha: float, min_per_client: int,
    rng: np.random.Generator,
) -> list[list[int]]:
    label_names = sorted({labels[i] for i in ordered})
    groups = [rng.permutation(np.asarray([i for i in ordered if labels[i] == lab], dtype=np.int64))
              for lab in label_names]
    for _ in range(_DIRICHLET_MAX_TRIES):
        clients = _dirichlet_once(groups, n_clients, alpha, rng)
        if min(len(c) for c in clients) >= min_per_client:
            return clients
    raise DataError(
        f"Dirichlet(alpha={alpha}) gave some client fewer than {min_per_client} examples in "
        f"{_DIRICHLET_MAX_TRIES} draws ({len(ordered)} examples, {n_clients} clients); "
        "raise alpha, or lower n_clients or min_per_client"
    )


def partition(
    labels: Sequence[str],
    indices: Sequence[int],
    *,
    n_clients: int,
    kind: PartitionKind,
    alpha: float = 0.5,
    seed: int,
    min_per_client: int = 1,
) -> list[tuple[int, ...]]:
    """Share ``indices`` (into ``labels``) among ``n_clients``; one sorted tuple per client.

    ``iid``: a seeded shuffle cut into near-equal chunks (sizes differ by at most 1).
    ``dirichlet``: per label, proportions over clients ~ Dir(alpha) (small alpha = skewed),
    redrawn until every client holds at least ``min_per_client`` examples.
    The result depends only on the set of indices, the labels and the seed.
    """
    ordered = _check_partition_args(labels, indices, n_clients, alpha, min_per_client)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        clients = _iid(ordered, n_clients, rng)
    elif kind == "dirichlet":
        clients = _dirichlet(labels, ordered, n_clients, alpha, min_per_client, rng)
    else:
        raise DataError(f'unknown partition kind {kind!r}; expected "iid" or "dirichlet"')
    return [tuple(sorted(client)) for client in clients]


def label_counts(ds: TextDataset, indices: Sequence[int]) -> dict[str, int]:
    """Examples per label among ``indices``, for every label of ``ds`` (zeros included)."""
    counts = Counter(ds.examples[i].label for i in indices)
    return {lab: counts.get(lab, 0) for lab in ds.labels}
