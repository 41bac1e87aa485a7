"""The task's data: examples of a task kind, seeded stratified splits and client partitions.

A dataset is a tuple of ``Example``: a text and its label (classification), a prompt and its
response (instruction), or a text (language_modeling), each with an optional group. Files are
read by testbed.ml.formats. Splits and partitions are tuples of sorted indices into the
examples, stratified and grouped by the examples' groups, so every split is reproducible from
``(dataset, seed)`` and cheap to log.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from testbed.config.dataset import ColumnsConfig
from testbed.config.files import FileProblem, input_path, regular_file
from testbed.config.schema import BUNDLED_KINDS
from testbed.ml.assets import bbc_news_dir
from testbed.ml.formats import TABLE_SUFFIXES, TASK_KINDS, DataError, read_rows

PartitionKind = Literal["iid", "dirichlet"]
_DIRICHLET_MAX_TRIES = 1000


@dataclass(frozen=True)
class ChatTurn:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class Example:
    """One example of any task kind. classification: `text` and its `label`; instruction: the
    prompt in `text` (or as chat `turns`, ending with a user turn) and the reference response
    in `label`; language_modeling: `text` alone."""

    text: str
    label: str = ""
    group: str | None = None  # what splits stratify and dirichlet groups by (None: classification's label)
    turns: tuple[ChatTurn, ...] = ()  # an instruction's prompt as chat turns (from a `messages` list)

    @property
    def response(self) -> str:
        return self.label

    @property
    def group_key(self) -> str | None:
        return self.group if self.group is not None else (self.label or None)


@dataclass(frozen=True)
class TextDataset:
    name: str  # "bbc-news", or the file name for bring-your-own data
    examples: tuple[Example, ...]
    labels: tuple[str, ...]  # sorted, unique (classification; empty for generative data)
    kind: str = "classification"  # the task kind the examples were read for

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def example_labels(self) -> tuple[str, ...]:
        """The label of every example, in order."""
        return tuple(example.label for example in self.examples)

    @property
    def groups(self) -> tuple[str, ...] | None:
        """Every example's partition group, in order (what ``partition`` takes): its group, else
        (classification) its label; None where the data has none (the dirichlet partition then
        falls back to iid). A generative example's label is its response: never a group."""
        if self.kind == "classification":
            keys = tuple(example.group_key for example in self.examples)
        else:
            keys = tuple(example.group for example in self.examples)
        return None if any(k is None for k in keys) else keys


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


def _make_dataset(name: str, examples: list[Example], where: str, kind: str = "classification") -> TextDataset:
    if not examples:
        raise DataError(f"{where}: (file): no rows")
    if kind != "classification":
        return TextDataset(name=name, examples=tuple(examples), labels=(), kind=kind)
    labels = tuple(sorted({example.label for example in examples}))
    if len(labels) < 2:
        raise DataError(f"{where}: (labels): needs at least 2 distinct labels, found 1: {labels[0][:80]!r}")
    return TextDataset(name=name, examples=tuple(examples), labels=labels)


def _bbc_articles(name: str, kind: str) -> tuple[Path, list[tuple[str, str]]]:
    """``(topic folder, text)`` of every BBC article, folders and files in sorted order."""
    if kind not in BUNDLED_KINDS[name]:
        raise DataError(f"dataset {name} serves task.kind {' or '.join(BUNDLED_KINDS[name])}, not {kind}")
    root = bbc_news_dir()
    return root, [(folder.name, _decode(path.read_bytes()))
                  for folder in sorted(p for p in root.iterdir() if p.is_dir()) for path in sorted(folder.glob("*.txt"))]


def load_bbc_news(kind: str = "classification") -> TextDataset:
    """BBC News: 2,225 articles ``"<title>\\n<body>"``, files read in sorted order. classification:
    label = topic folder (business, entertainment, politics, sports, tech); language_modeling:
    the text alone, grouped by topic."""
    root, articles = _bbc_articles("bbc-news", kind)
    if kind == "classification":
        examples = [Example(text=_article_text(raw), label=topic) for topic, raw in articles]
    else:
        examples = [Example(text=_article_text(raw), group=topic) for topic, raw in articles]
    return _make_dataset("bbc-news", examples, str(root), kind)


def load_bbc_headlines(kind: str = "instruction") -> TextDataset:
    """The BBC News articles as instructions: the body (whitespace collapsed) -> its headline
    (the first line), grouped by topic folder; bbc-news's order."""
    root, articles = _bbc_articles("bbc-headlines", kind)
    examples = []
    for topic, raw in articles:
        title, _, body = raw.strip().partition("\n")
        if body.strip():
            examples.append(Example(text=_collapse(body), label=_collapse(title), group=topic))
    return _make_dataset("bbc-headlines", examples, str(root), kind)


def load_table(path: str | Path, *, text: str = "text", label: str = "label", kind: str = "classification",
               columns: ColumnsConfig | None = None) -> TextDataset:
    """Bring-your-own data: CSV/TSV with a header, JSON lines, a JSON array of objects, or
    Parquet, read for task `kind` (testbed.ml.formats: the columns each kind reads).

    ``text`` and ``label`` name the classification columns (``columns`` overrides them and
    names the others); labels become strings. Empty texts, labels, prompts or responses are
    errors naming the row, not silently dropped.
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
    if kind not in TASK_KINDS:
        raise DataError(f"{path}: (kind): unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
    if path.stat().st_size == 0:
        expected = {".csv": "a header row and data rows", ".tsv": "a header row and data rows",
                    ".parquet": "a Parquet file"}.get(suffix, "one JSON object per line")
        raise DataError(f"{path}: (file): empty file, expected {expected}")
    rows = read_rows(path, kind=kind, columns=columns or ColumnsConfig(), text=text, label=label)
    examples = [Example(text=r.text, label=r.label, group=r.group, turns=tuple(ChatTurn(*t) for t in r.turns))
                for r in rows]
    return _make_dataset(path.name, examples, str(path), kind)


# a bundled dataset's name -> its loader, taking the task kind (BUNDLED_KINDS: the kinds it serves)
DATASETS: dict[str, Callable[[str], TextDataset]] = {"bbc-news": load_bbc_news, "bbc-headlines": load_bbc_headlines}


def load_dataset(
    *, name: str | None = None, path: str | Path | None = None, text: str = "text", label: str = "label",
    kind: str = "classification", columns: ColumnsConfig | None = None,
) -> TextDataset:
    """A built-in dataset by ``name`` or a data file by ``path`` (exactly one of them), read
    for task ``kind``; ``columns`` names a file's columns (testbed.ml.formats)."""
    if (name is None) == (path is None):
        raise DataError("give exactly one of name= (a built-in dataset) or path= (a data file)")
    if path is not None:
        return load_table(path, text=text, label=label, kind=kind, columns=columns)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} (or pass path= to a data file)")
    return DATASETS[name](kind)


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


def _strata(ds: TextDataset) -> dict[str, list[int]]:
    """What a split stratifies by: the examples' groups (classification: the labels, unless a
    group column was given), sorted; data without groups is one stratum."""
    groups = ds.groups
    if groups is None:
        return {"": list(range(len(ds.examples)))}
    strata: dict[str, list[int]] = {name: [] for name in sorted(set(groups))}
    for i, name in enumerate(groups):
        strata[name].append(i)
    return strata


def split_dataset(ds: TextDataset, *, test_size: int, public_size: int = 0, seed: int) -> Splits:
    """Seeded, stratified, disjoint train/test/public splits of exact sizes.

    Each group's (classification: label's) share of ``test`` (and of ``public``) is within one
    example of proportional; data without groups is split unstratified.
    """
    n = len(ds.examples)
    if test_size < 0 or public_size < 0:
        raise DataError(f"test_size ({test_size}) and public_size ({public_size}) must be >= 0")
    if n - test_size - public_size < 2:
        raise DataError(
            f"{ds.name}: test_size {test_size} + public_size {public_size} leaves {n - test_size - public_size} "
            f"training examples of {n}; need at least 2"
        )
    strata = _strata(ds)
    sizes = [len(members) for members in strata.values()]
    test_counts = _allocate(test_size, sizes, sizes)
    public_counts = _allocate(public_size, sizes, [s - t for s, t in zip(sizes, test_counts)])
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    public: list[int] = []
    for members, n_test, n_public in zip(strata.values(), test_counts, public_counts):
        order = rng.permutation(members).tolist()
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
    groups: Sequence[str],
    indices: Sequence[int],
    *,
    n_clients: int,
    kind: PartitionKind,
    alpha: float = 0.5,
    seed: int,
    min_per_client: int = 1,
) -> list[tuple[int, ...]]:
    """Share ``indices`` (into ``groups``: each example's group key, e.g. its label) among
    ``n_clients``; one sorted tuple per client.

    ``iid``: a seeded shuffle cut into near-equal chunks (sizes differ by at most 1).
    ``dirichlet``: per group, proportions over clients ~ Dir(alpha) (small alpha = skewed),
    redrawn until every client holds at least ``min_per_client`` examples.
    The result depends only on the set of indices, the groups and the seed.
    """
    ordered = _check_partition_args(groups, indices, n_clients, alpha, min_per_client)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        clients = _iid(ordered, n_clients, rng)
    elif kind == "dirichlet":
        clients = _dirichlet(groups, ordered, n_clients, alpha, min_per_client, rng)
    else:
        raise DataError(f'unknown partition kind {kind!r}; expected "iid" or "dirichlet"')
    return [tuple(sorted(client)) for client in clients]


def partition_dataset(
    ds: TextDataset,
    indices: Sequence[int],
    *,
    n_clients: int,
    kind: PartitionKind,
    alpha: float = 0.5,
    seed: int,
    min_per_client: int = 1,
) -> tuple[list[tuple[int, ...]], str | None]:
    """``partition`` by the dataset's groups (``TextDataset.groups``: classification's labels,
    unless a group column was given), and a one-line notice where dirichlet was asked of data
    without groups: that data is partitioned iid instead."""
    groups, notice = ds.groups, None
    if groups is None:
        groups = ("",) * len(ds.examples)
        if kind == "dirichlet":
            kind, notice = "iid", f"{ds.name}: no group column (dataset.columns.group): partitioned iid instead of dirichlet"
    parts = partition(groups, indices, n_clients=n_clients, kind=kind, alpha=alpha, seed=seed,
                      min_per_client=min_per_client)
    return parts, notice


def label_counts(ds: TextDataset, indices: Sequence[int]) -> dict[str, int]:
    """Examples per label among ``indices``, for every label of ``ds`` (zeros included)."""
    counts = Counter(ds.examples[i].label for i in indices)
    return {lab: counts.get(lab, 0) for lab in ds.labels}
