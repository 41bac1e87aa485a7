from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from testbed.config.fleet import expand_fleet
from testbed.config.scenario import load_scenario
from testbed.ml.assets import AssetPaths
from testbed.ml.data import (
    DataError,
    Example,
    TextDataset,
    label_counts,
    load_bbc_headlines,
    load_bbc_news,
    load_dataset,
    load_table,
    partition,
    partition_dataset,
    split_dataset,
)
from testbed.ml.taskdata import build_task_data
from testbed.sim import startup
from tests.fuzzing import SMOKE

BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture(scope="module")
def bbc(assets: AssetPaths) -> TextDataset:
    return load_bbc_news()


@pytest.fixture(scope="module")
def headlines(assets: AssetPaths) -> TextDataset:
    return load_bbc_headlines()


def _toy(counts: dict[str, int]) -> TextDataset:
    examples = tuple(Example(text=f"{lab} {i}", label=lab) for lab, n in counts.items() for i in range(n))
    return TextDataset(name="toy", examples=examples, labels=tuple(sorted(counts)))


def _mean_max_share(labels: tuple[str, ...], parts: list[tuple[int, ...]]) -> float:
    """Mean over clients of the largest label's share of the client's data."""
    shares = []
    for part in parts:
        counts = np.unique([labels[i] for i in part], return_counts=True)[1]
        shares.append(counts.max() / len(part))
    return float(np.mean(shares))


# --- BBC News -----------------------------------------------------------------------------------


def test_bbc_news_has_2225_articles_in_5_labels(bbc: TextDataset) -> None:
    assert bbc.name == "bbc-news"
    assert len(bbc) == 2225
    assert bbc.labels == tuple(BBC_COUNTS)
    assert label_counts(bbc, range(len(bbc))) == BBC_COUNTS


def test_bbc_news_text_is_title_then_collapsed_body(bbc: TextDataset) -> None:
    first = bbc.examples[0]

    assert first.label == "business"
    assert first.text.startswith("Ad sales boost Time Warner profit\nQuarterly profits at US media giant")
    assert all(e.text.count("\n") == 1 and "  " not in e.text for e in bbc.examples)
    assert min(len(e.text) for e in bbc.examples) >= 400


def test_bbc_news_decodes_cp1252_pound_signs(bbc: TextDataset) -> None:
    mutu = next(e for e in bbc.examples if e.text.startswith("Chelsea sack Mutu"))

    assert "a £15.8m signing" in mutu.text
    assert not any("\ufffd" in e.text for e in bbc.examples)


def test_load_dataset_by_name_and_unknown_name(bbc: TextDataset) -> None:
    assert load_dataset(name="bbc-news") == bbc
    with pytest.raises(DataError, match=r"unknown dataset 'news'; known: \['bbc-headlines', 'bbc-news'\]"):
        load_dataset(name="news")
    with pytest.raises(DataError, match="exactly one of"):
        load_dataset()


def test_bbc_news_for_language_modelling_is_the_texts_grouped_by_topic(bbc: TextDataset) -> None:
    lm = load_dataset(name="bbc-news", kind="language_modeling")

    assert (lm.name, lm.kind, lm.labels, len(lm)) == ("bbc-news", "language_modeling", (), 2225)
    assert lm.examples == tuple(Example(text=e.text, group=e.label) for e in bbc.examples)
    assert lm.groups == bbc.example_labels


def test_bbc_headlines_maps_each_body_to_its_headline(assets: AssetPaths, headlines: TextDataset,
                                                      bbc: TextDataset) -> None:
    first_file = min((assets.bbc_news / "business").glob("*.txt"))
    first_line = first_file.read_bytes().decode("utf-8", "replace").splitlines()[0].strip()
    first = headlines.examples[0]

    assert (headlines.name, headlines.kind, headlines.labels, len(headlines)) == ("bbc-headlines", "instruction", (), 2225)
    assert first.label == first_line == "Ad sales boost Time Warner profit"
    assert first.text.startswith("Quarterly profits at US media giant TimeWarner jumped 76% to $1.13bn")
    assert first.group == "business" and first.turns == ()
    assert all(f"{h.label}\n{h.text}" == b.text for h, b in zip(headlines.examples, bbc.examples))
    assert headlines.groups == bbc.example_labels
    assert load_dataset(name="bbc-headlines", kind="instruction") == headlines


def test_a_bundled_dataset_serves_its_kinds_only(assets: AssetPaths) -> None:
    with pytest.raises(DataError, match=r"^dataset bbc-headlines serves task.kind instruction, not classification$"):
        load_dataset(name="bbc-headlines")
    with pytest.raises(DataError, match=r"^dataset bbc-news serves task.kind classification or language_modeling, "
                                        r"not instruction$"):
        load_dataset(name="bbc-news", kind="instruction")


# --- bring-your-own tables ----------------------------------------------------------------------


def test_csv_round_trip_with_custom_columns(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text('id,review,stars\n1,"Great, loved it",5\n2,Awful,1\n3,"Fine\nreally",5\n')

    ds = load_dataset(path=path, text="review", label="stars")

    assert ds.name == "reviews.csv"
    assert ds.examples == (Example("Great, loved it", "5"), Example("Awful", "1"), Example("Fine\nreally", "5"))
    assert ds.labels == ("1", "5")


def test_tsv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("text\tlabel\na, b\tpos\nc\tneg\n")

    assert load_table(path).examples == (Example("a, b", "pos"), Example("c", "neg"))


def test_jsonl_round_trip_with_custom_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [{"sentence": "ok", "y": 1, "extra": None}, {"sentence": "bad", "y": 0}, {"sentence": "good", "y": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")

    ds = load_table(path, text="sentence", label="y")

    assert ds.examples == (Example("ok", "1"), Example("bad", "0"), Example("good", "1"))
    assert ds.labels == ("0", "1")


def test_json_array_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "x", "label": "a"}, {"text": "y", "label": "b"}]))

    assert len(load_table(path)) == 2


def test_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: \(file\): file not found"):
        load_table(tmp_path / "nope.csv")


def test_table_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("x")

    with pytest.raises(DataError, match=r"data\.xlsx: \(file\): unsupported file type '\.xlsx'; expected one of"):
        load_table(path)


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl"])
def test_table_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("")

    with pytest.raises(DataError, match=rf"{re.escape(name)}: \(file\): empty file"):
        load_table(path)


def test_table_header_only_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("text,label\n")

    with pytest.raises(DataError, match=r"h\.csv: \(file\): no rows"):
        load_table(path)


def test_table_missing_column_lists_columns_found(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("body,topic\nx,a\ny,b\n")

    with pytest.raises(DataError, match=re.escape("missing text column 'text'; columns found: ['body', 'topic']")):
        load_table(path)
    with pytest.raises(DataError, match=re.escape("missing label column 'label'; columns found: ['body', 'topic']")):
        load_table(path, text="body")


def test_jsonl_missing_key_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "topic": "y"}\n')

    expected = "k.jsonl: line 2: missing label column 'label'; columns found: ['text', 'topic']"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_table(path)


def test_table_single_class(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("text,label\na,x\nb,x\n")

    with pytest.raises(DataError, match=re.escape("needs at least 2 distinct labels, found 1: 'x'")):
        load_table(path)


def test_jsonl_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", label: "x"}\n')

    with pytest.raises(DataError, match=r"bad\.jsonl: line 3: invalid JSON \(column \d+"):
        load_table(path)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n["b", "y"]\n')

    with pytest.raises(DataError, match=r"list\.jsonl: line 2: expected a JSON object, got list"):
        load_table(path)


def test_empty_text_names_the_row(tmp_path: Path) -> None:
    csv_path = tmp_path / "gap.csv"
    csv_path.write_text("text,label\na,x\n   ,y\n,x\n")
    jsonl_path = tmp_path / "gap.jsonl"
    jsonl_path.write_text('{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n')

    with pytest.raises(DataError, match=r"gap\.csv: row 2: empty text in column 'text'"):
        load_table(csv_path)
    with pytest.raises(DataError, match=r"gap\.jsonl: line 2: empty text in column 'text'"):
        load_table(jsonl_path)


def test_empty_label_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "nolabel.csv"
    path.write_text("text,label\na,x\nb,\n")

    with pytest.raises(DataError, match=r"nolabel\.csv: row 2: empty label in column 'label'"):
        load_table(path)


# --- split_dataset ------------------------------------------------------------------------------


def test_split_sizes_exact_disjoint_and_complete(bbc: TextDataset) -> None:
    splits = split_dataset(bbc, test_size=250, public_size=100, seed=0)

    assert (len(splits.train), len(splits.test), len(splits.public)) == (1875, 250, 100)
    everything = set(splits.train) | set(splits.test) | set(splits.public)
    assert len(everything) == 2225 == len(bbc)
    assert all(list(s) == sorted(s) for s in (splits.train, splits.test, splits.public))


def test_split_is_stratified(bbc: TextDataset) -> None:
    splits = split_dataset(bbc, test_size=250, public_size=100, seed=3)

    for part, size in ((splits.test, 250), (splits.public, 100)):
        counts = label_counts(bbc, part)
        for label, total in BBC_COUNTS.items():
            assert abs(counts[label] - size * total / 2225) <= 1, (label, counts)
    assert label_counts(bbc, splits.test) == {
        "business": 57, "entertainment": 43, "politics": 47, "sports": 58, "tech": 45,
    }


def test_split_is_deterministic_per_seed(bbc: TextDataset) -> None:
    a = split_dataset(bbc, test_size=250, seed=7)
    b = split_dataset(bbc, test_size=250, seed=7)
    c = split_dataset(bbc, test_size=250, seed=8)

    assert a == b
    assert a.test != c.test
    assert a.public == ()


def test_split_on_small_unbalanced_data() -> None:
    ds = _toy({"a": 7, "b": 2, "c": 1})

    splits = split_dataset(ds, test_size=3, public_size=3, seed=0)

    assert (len(splits.train), len(splits.test), len(splits.public)) == (4, 3, 3)
    assert label_counts(ds, splits.test) == {"a": 2, "b": 1, "c": 0}


def test_split_must_leave_two_training_examples() -> None:
    ds = _toy({"a": 5, "b": 5})

    assert len(split_dataset(ds, test_size=4, public_size=4, seed=0).train) == 2
    with pytest.raises(DataError, match="leaves 1 training examples of 10; need at least 2"):
        split_dataset(ds, test_size=5, public_size=4, seed=0)


# --- partition ----------------------------------------------------------------------------------


def test_iid_partition_is_near_equal_disjoint_and_complete(bbc: TextDataset) -> None:
    train = split_dataset(bbc, test_size=250, seed=0).train

    parts = partition(bbc.example_labels, train, n_clients=4, kind="iid", seed=0)

    assert sorted(len(p) for p in parts) == [493, 494, 494, 494]
    assert sorted(i for p in parts for i in p) == list(train)
    assert all(list(p) == sorted(p) for p in parts)


def test_dirichlet_is_deterministic_and_order_free(bbc: TextDataset) -> None:
    train = list(split_dataset(bbc, test_size=250, seed=0).train)
    shuffled = random.Random(1).sample(train, len(train))

    a = partition(bbc.example_labels, train, n_clients=4, kind="dirichlet", alpha=0.5, seed=11)
    b = partition(bbc.example_labels, shuffled, n_clients=4, kind="dirichlet", alpha=0.5, seed=11)
    c = partition(bbc.example_labels, train, n_clients=4, kind="dirichlet", alpha=0.5, seed=12)

    assert a == b
    assert a != c
    assert sorted(i for p in a for i in p) == train


def test_dirichlet_skew_follows_alpha(bbc: TextDataset) -> None:
    labels = bbc.example_labels
    train = split_dataset(bbc, test_size=250, seed=0).train
    iid, skewed, flat = [], [], []
    for seed in range(5):
        iid.append(_mean_max_share(labels, partition(labels, train, n_clients=4, kind="iid", seed=seed)))
        skewed.append(_mean_max_share(
            labels, partition(labels, train, n_clients=4, kind="dirichlet", alpha=0.5, seed=seed)))
        flat.append(_mean_max_share(
            labels, partition(labels, train, n_clients=4, kind="dirichlet", alpha=1000, seed=seed)))

    # measured: IID ~0.24, Dir(0.5) 0.41-0.70, Dir(1000) ~0.23 (the global max share is 0.23)
    assert np.mean(skewed) > np.mean(iid) + 0.15
    assert abs(np.mean(flat) - np.mean(iid)) < 0.03


def test_dirichlet_1000_gives_near_equal_sizes(bbc: TextDataset) -> None:
    train = split_dataset(bbc, test_size=250, seed=0).train

    parts = partition(bbc.example_labels, train, n_clients=4, kind="dirichlet", alpha=1000, seed=0)

    assert max(abs(len(p) - len(train) / 4) for p in parts) < 0.05 * len(train) / 4


def test_dirichlet_respects_min_per_client(bbc: TextDataset) -> None:
    train = split_dataset(bbc, test_size=250, seed=0).train

    parts = partition(bbc.example_labels, train, n_clients=20, kind="dirichlet", alpha=0.1, seed=0, min_per_client=5)

    assert len(parts) == 20
    assert min(len(p) for p in parts) >= 5
    with pytest.raises(DataError, match="fewer than 90 examples in 1000 draws"):
        partition(bbc.example_labels, train, n_clients=20, kind="dirichlet", alpha=0.01, seed=0, min_per_client=90)


def test_partition_rejects_impossible_requests() -> None:
    labels = ("a", "b") * 5

    with pytest.raises(DataError, match="10 examples cannot give 4 clients at least 3 each"):
        partition(labels, range(10), n_clients=4, kind="iid", seed=0, min_per_client=3)
    with pytest.raises(DataError, match="duplicates"):
        partition(labels, [0, 1, 1], n_clients=1, kind="iid", seed=0)
    with pytest.raises(DataError, match="unknown partition kind 'skewed'"):
        partition(labels, range(10), n_clients=2, kind="skewed", seed=0)  # type: ignore[arg-type]


# --- generative data: splits and partitions by group ---------------------------------------------


def _texts(n: int, groups: list[str] | None = None) -> TextDataset:
    examples = tuple(Example(text=f"t{i}", label=f"r{i}", group=None if groups is None else groups[i % len(groups)])
                     for i in range(n))
    return TextDataset(name="gen.jsonl", examples=examples, labels=(), kind="instruction")


def test_generative_data_without_groups_splits_unstratified_at_exact_sizes() -> None:
    ds = _texts(50)
    order = np.random.default_rng(4).permutation(50).tolist()

    splits = split_dataset(ds, test_size=10, public_size=5, seed=4)

    assert ds.groups is None
    assert splits.test == tuple(sorted(order[:10]))
    assert splits.public == tuple(sorted(order[10:15]))
    assert splits.train == tuple(sorted(order[15:]))


def test_generative_groups_stratify_splits_and_partitions_like_the_labels(bbc: TextDataset,
                                                                          headlines: TextDataset) -> None:
    """bbc-headlines's groups are bbc-news's labels: the same splits and dirichlet partitions."""
    for seed in (0, 5):
        a = split_dataset(bbc, test_size=250, public_size=100, seed=seed)
        b = split_dataset(headlines, test_size=250, public_size=100, seed=seed)
        assert a == b
        parts, notice = partition_dataset(headlines, b.train, n_clients=6, kind="dirichlet", alpha=0.3, seed=seed)
        assert parts == partition(bbc.example_labels, a.train, n_clients=6, kind="dirichlet", alpha=0.3, seed=seed)
        assert notice is None


def test_classification_partitions_are_unchanged(bbc: TextDataset) -> None:
    train = split_dataset(bbc, test_size=150, seed=2).train
    for kind in ("iid", "dirichlet"):
        parts, notice = partition_dataset(bbc, train, n_clients=5, kind=kind, alpha=0.5, seed=9, min_per_client=8)

        assert parts == partition(bbc.example_labels, train, n_clients=5, kind=kind, alpha=0.5, seed=9,
                                  min_per_client=8)
        assert notice is None
    toy = _toy({"a": 7, "b": 5})
    assert partition_dataset(toy, range(12), n_clients=3, kind="dirichlet", seed=1)[0] == partition(
        toy.example_labels, range(12), n_clients=3, kind="dirichlet", seed=1)


def test_dirichlet_without_groups_is_iid_with_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(40)))
    ds = load_table(path, kind="instruction")
    train = split_dataset(ds, test_size=8, seed=3).train

    parts, notice = partition_dataset(ds, train, n_clients=4, kind="dirichlet", alpha=0.1, seed=3, min_per_client=2)

    assert parts == partition([""] * 40, train, n_clients=4, kind="iid", seed=3)
    assert sorted(len(p) for p in parts) == [8, 8, 8, 8]
    assert notice == "plain.jsonl: no group column (dataset.columns.group): partitioned iid instead of dirichlet"
    assert partition_dataset(ds, train, n_clients=4, kind="iid", seed=3) == (parts, None)


def test_task_data_reads_the_scenarios_kind_and_columns(tmp_path: Path, assets: AssetPaths,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}", "src": "xy"[i % 2]}) + "\n" for i in range(60)))
    base = ["task.kind=instruction", "task.template=plain", "dataset.test_size=10", "partition.min_per_client=2"]

    grouped = build_task_data(load_scenario(SMOKE, [*base, f"dataset.path={path}",
                                                    "dataset.columns={prompt: q, response: a, group: src}"]))
    plain_scenario = load_scenario(SMOKE, [*base, f"dataset.path={path}", "dataset.columns={prompt: q, response: a}"])
    plain = build_task_data(plain_scenario)
    headlines = build_task_data(load_scenario(SMOKE, [*base, "dataset.name=bbc-headlines"]))

    assert grouped.dataset.kind == "instruction" and grouped.notice is None
    assert grouped.at((0, 1)) == [Example("q0", "a0", group="x"), Example("q1", "a1", group="y")]
    assert grouped.texts((2,)) == ["q2"] and grouped.labels((2,)) == ["a2"]
    assert plain.notice == "qa.jsonl: no group column (dataset.columns.group): partitioned iid instead of dirichlet"
    assert plain.client_indices == tuple(partition([""] * 60, plain.splits.train, n_clients=3, kind="iid", seed=0))
    assert headlines.dataset.name == "bbc-headlines" and len(headlines.splits.test) == 10
    assert headlines.notice is None
    capsys.readouterr()
    specs = startup.client_specs(plain_scenario, expand_fleet(plain_scenario), str(assets.tiny))  # the server's start-up
    assert [s.train_indices for s in specs] == list(plain.client_indices)
    assert capsys.readouterr().err == f"{plain.notice}\n"


def test_label_counts_include_zeros() -> None:
    ds = _toy({"a": 2, "b": 1, "c": 1})

    assert label_counts(ds, [0, 1]) == {"a": 2, "b": 0, "c": 0}
