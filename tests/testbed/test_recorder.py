"""The run tables grow by appending: rows, a late column, a checkpoint's cut, parquet at the end."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.results import csvtext
from testbed.results import recorder as rec
from testbed.results.recorder import RunRecorder, TableMark


def _event(rnd: int, client: int, **extra) -> dict:
    return dict(round=rnd, client=client, kind="compute", payload_bytes=0, wire_bytes=0, sim_start_s=0.5 * rnd,
                sim_end_s=0.5 * rnd + 1.0, host_s=0.1, device_s=1.0, status="ok", detail="train", **extra)


def test_flushes_append_rows_and_a_late_column_rewrites_the_table_once(tmp_path):
    r = RunRecorder(tmp_path)
    r.flush()  # headers only
    assert pd.read_csv(tmp_path / "events.csv").columns.tolist() == rec.EVENT_COLUMNS
    for rnd in (1, 2):
        r.event(**_event(rnd, 0))
        r.event(**_event(rnd, 1))
        r.round(round=rnd, participants=2)
        r.flush()
    events = pd.read_csv(tmp_path / "events.csv")
    assert events["round"].tolist() == [1, 1, 2, 2] and events["client"].tolist() == [0, 1, 0, 1]
    assert pd.read_csv(tmp_path / "rounds.csv")["round"].tolist() == [1, 2]
    r.event(**_event(3, 0, queue_s=2.5))  # a key first seen in round 3
    r.flush()
    events = pd.read_csv(tmp_path / "events.csv")
    assert events.columns.tolist() == [*rec.EVENT_COLUMNS, "queue_s"]
    assert events["queue_s"].isna().tolist() == [True] * 4 + [False] and events["queue_s"].iloc[-1] == 2.5
    assert events["round"].dtype.kind == "i"  # counts stay integers through the rewrite
    r.event(**_event(4, 0))  # the key missing again: appended with an empty cell
    r.flush()
    assert pd.read_csv(tmp_path / "events.csv")["queue_s"].isna().sum() == 5


def test_a_row_of_as_many_keys_with_one_new_is_a_late_column_not_a_shifted_row(tmp_path):
    """Dict rows of exactly the table's columns are appended at once; one of as many keys, one
    of them new (and one column missing), still rewrites the table with the new column."""
    r = RunRecorder(tmp_path)
    r.client_round(round=1, client=0, outcome="ok")
    r.flush()
    r.client_round(round=2, client=0, outcome="ok")
    r.client_round(round=2, client=1, staleness=3)  # three keys too: `outcome` missing, `staleness` new
    r.flush()
    table = pd.read_csv(tmp_path / "client_rounds.csv")
    assert table.columns.tolist()[-1] == "staleness" and table["client"].tolist() == [0, 0, 1]
    assert table["outcome"].fillna("").tolist() == ["ok", "ok", ""] and table["staleness"].iloc[2] == 3
    assert csvtext.csv_exact([{"a": 1, "b": 2.5}], ["a", "b"]) == "1,2.5\n"
    assert csvtext.csv_exact([{"a": 1, "c": 2.5}], ["a", "b"]) is None
    assert csvtext.csv_exact([{"a": 1}], ["a", "b"]) is None


def test_client_rows_given_as_values_are_written_and_their_failures_read_back(tmp_path):
    """client_values rows are written as the same rows given as dicts; failed_client_rounds reads
    (round, device, cause) of the failed ones, whichever way they were given."""
    def row(client: int, outcome: str, cause: str) -> dict:
        return dict.fromkeys(rec.CLIENT_ROUND_COLUMNS, 1.5) | dict(round=2, client=client, device=f"pixel-7#{client}",
                                                                   outcome=outcome, cause=cause, host="h")
    rows = [row(0, "ok", ""), row(1, "oom", "oom"), row(2, "failed", "offline"), row(3, "discarded", "late")]
    as_dicts, as_values = RunRecorder(tmp_path / "d"), RunRecorder(tmp_path / "v")
    for r in rows:
        as_dicts.client_round(**r)
        as_values.client_values(tuple(r[c] for c in rec.CLIENT_ROUND_COLUMNS))
    as_dicts.flush()
    as_values.flush()
    assert (tmp_path / "v" / "client_rounds.csv").read_bytes() == (tmp_path / "d" / "client_rounds.csv").read_bytes()
    failed = [(2, "pixel-7#1", "oom"), (2, "pixel-7#2", "offline")]
    assert as_values.failed_client_rounds() == failed and as_dicts.failed_client_rounds() == failed
    as_values.flush()  # nothing new: the latest flush wrote no client row
    assert as_values.failed_client_rounds() == []


def test_a_checkpoint_mark_cuts_later_rows_even_after_a_rewrite(tmp_path):
    r = RunRecorder(tmp_path)
    r.event(**_event(1, 0))
    r.flush()
    mark = r.marks()
    assert mark["events.csv"].rows == 1 and mark["client_rounds.csv"] == TableMark(
        (tmp_path / "client_rounds.csv").stat().st_size, 0, tuple(rec.CLIENT_ROUND_COLUMNS))
    r.event(**_event(2, 0))
    r.flush()
    with open(tmp_path / "events.csv", "a") as f:
        f.write("3,0,comp")  # a crash mid-append
    fresh = RunRecorder(tmp_path)
    fresh.restore([{"round": 1}], mark)
    assert pd.read_csv(tmp_path / "events.csv")["round"].tolist() == [1]
    fresh.event(**_event(2, 1))
    fresh.flush()
    assert pd.read_csv(tmp_path / "events.csv")["client"].tolist() == [0, 1]
    # a column added after the mark: the file is rewritten back to the mark's header and rows
    fresh.event(**_event(3, 0, queue_s=1.0))
    fresh.flush()
    RunRecorder(tmp_path).restore([], mark)
    back = pd.read_csv(tmp_path / "events.csv")
    assert back.columns.tolist() == rec.EVENT_COLUMNS and back["round"].tolist() == [1]


def test_muted_rows_are_dropped_and_long_tables_go_to_parquet(tmp_path, monkeypatch):
    r = RunRecorder(tmp_path)
    r.muted = True
    r.event(**_event(1, 0))
    r.round(round=1)
    r.flush()
    assert not (tmp_path / "events.csv").exists() and r.rounds == [{"round": 1}]
    r.muted = False
    monkeypatch.setattr(rec, "PARQUET_MIN_ROWS", 3)
    for client in range(3):
        r.event(**_event(1, client))
    r.client_round(round=1, client=0, outcome="ok")
    r.flush()
    assert r.failed_client_rounds() == []
    assert r.finish() == [tmp_path / "events.parquet"]
    parquet, csv = pd.read_parquet(tmp_path / "events.parquet"), pd.read_csv(tmp_path / "events.csv")
    pd.testing.assert_frame_equal(parquet, csv, check_dtype=False)


def test_appended_rows_are_written_as_pandas_writes_them():
    import numpy as np

    rows = [dict(round=1, client=np.int64(3), kind="adapter_up", payload_bytes=1234, wire_bytes=1300.0,
                 sim_start_s=0.1, sim_end_s=1e-05, host_s=float("nan"), device_s=np.float64(2.5), status="ok",
                 detail='a, "b"'),
            dict(round=2, client=-1, kind="compute", payload_bytes=0, wire_bytes=0, sim_start_s=123456789.123456789,
                 sim_end_s=None, host_s=1 / 3, device_s=True, status="failed", detail="x\ny"),
            dict(round=3, client=2, kind="compute", payload_bytes=None, wire_bytes=float("nan"),
                 sim_start_s=np.float64("nan"), host_s=np.float32(0.1))]
    assert csvtext.csv_rows(rows, rec.EVENT_COLUMNS) == rec._table(rows, rec.EVENT_COLUMNS).to_csv(index=False,
                                                                                                 header=False)


def _row_by_row(rows: list[dict], columns: list[str]) -> str:
    """The reference: each row through the csv module, each cell as _cell makes it."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([csvtext.cell(row.get(c), c in rec.INTEGER_COLUMNS) for c in columns])
    return buf.getvalue()


_counts = st.one_of(st.none(), st.integers(-2**40, 2**40), st.integers(-1000, 1000).map(np.int64),
                    st.integers(-1000, 1000).map(float), st.just(float("nan")))
_cells = st.one_of(st.none(), st.integers(-2**40, 2**40), st.floats(allow_nan=True, width=64), st.booleans(),
                   st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
                   st.integers(-1000, 1000).map(np.int64), st.floats(-1e6, 1e6, width=32).map(np.float32))
_row = st.fixed_dictionaries({c: _counts if c in rec.INTEGER_COLUMNS else _cells for c in rec.EVENT_COLUMNS})


@settings(max_examples=200, deadline=None)
@given(st.lists(_row, min_size=1, max_size=6), st.sampled_from(["float", "int", "str"]))
def test_columns_written_at_once_are_written_as_the_csv_module_writes_each_row(rows, uniform):
    """Whole columns of one type take the fast path, mixed ones go cell by cell: either way the
    bytes are those of the csv module writing row by row (one column is made uniform so that
    the fast path is taken for it)."""
    make = {"float": lambda i: i / 7, "int": lambda i: i * 3, "str": lambda i: f"k{i},\"q\"" if i % 2 else f"k{i}"}
    for i, row in enumerate(rows):
        row["sim_start_s"] = make[uniform](i)
    assert csvtext.csv_rows(rows, rec.EVENT_COLUMNS) == _row_by_row(rows, rec.EVENT_COLUMNS)


_repeating = st.sampled_from([0.0, -0.0, 1.5, 1 / 3, 2.0, 1e-05, 1e16, float("inf"), -float("inf"), float("nan"),
                              123456789.123456789, None])
_repeating_counts = st.sampled_from([0, 1, 7, 2**40, -3, None])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_repeating, _repeating_counts, st.sampled_from([True, False, None])),
                min_size=csvtext.MEMO_MIN_CELLS, max_size=4 * csvtext.MEMO_MIN_CELLS),
       st.lists(st.sampled_from(["ok", "a,b", 'q"', "x\ny", "", None]), min_size=1, max_size=200))
def test_long_columns_of_repeated_values_are_written_as_each_cell_alone(cells, texts):
    """Long columns format each distinct value once (zeros of both signs, NaN, None included);
    a string column checks each distinct value for quoting: the same bytes as the csv module
    writing row by row."""
    rows = [dict(_event(1, i), sim_end_s=f, wire_bytes=n, host_s=b, detail=texts[i % len(texts)])
            for i, (f, n, b) in enumerate(cells)]
    assert csvtext.csv_rows(rows, rec.EVENT_COLUMNS) == _row_by_row(rows, rec.EVENT_COLUMNS)


@pytest.mark.parametrize("value, other", [(0.0, -0.0), (-0.0, 0.0), (None, 1.5), (float("nan"), 2.5), (7, 8),
                                          ("a,b", "c"), ("ok", None), (True, False), (1.5, 1)])
def test_a_long_column_of_one_value_is_written_as_each_cell_alone(value, other):
    """A long column of one value throughout is written at once; one other value anywhere in it
    (a zero of the other sign, an empty cell, another type) is still written cell by cell."""
    n = csvtext.MEMO_MIN_CELLS + 5
    for cells in ([value] * n, [value] * (n - 1) + [other], [other] + [value] * (n - 1)):
        rows = [dict(_event(1, i), sim_end_s=c if not isinstance(c, str) else 1.0,
                     detail=c if isinstance(c, str) or c is None else "x", host_s=c) for i, c in enumerate(cells)]
        assert csvtext.csv_rows(rows, rec.EVENT_COLUMNS) == _row_by_row(rows, rec.EVENT_COLUMNS)


def test_rows_given_as_values_are_written_as_the_same_rows_as_dicts(tmp_path):
    """event_values rows, alone, mixed with dict rows (order kept) and with a late column, give
    the same file as the same rows given as dicts."""
    rows = [_event(1, c) for c in range(5)] + [_event(2, 0, queue_s=1.5)] + [_event(3, c) for c in range(3)]
    as_dicts, as_values = RunRecorder(tmp_path / "d"), RunRecorder(tmp_path / "v")
    for i, row in enumerate(rows):
        as_dicts.event(**row)
        if "queue_s" in row or i == 2:
            as_values.event(**row)
        else:
            as_values.event_values(tuple(row[c] for c in rec.EVENT_COLUMNS))
        if i in (0, 1, 4, 6):  # a first flush, one of values only, of a mix, and after the late column
            as_dicts.flush()
            as_values.flush()
    as_dicts.flush()
    as_values.flush()
    as_values.event(**_event(4, 0))  # a keyword row of exactly the table's columns is kept as its values
    assert as_values.tables["events.csv"].pending == [tuple(_event(4, 0)[c] for c in rec.EVENT_COLUMNS)]
    as_values.tables["events.csv"].drop_pending()
    assert (tmp_path / "v" / "events.csv").read_bytes() == (tmp_path / "d" / "events.csv").read_bytes()
    assert pd.read_csv(tmp_path / "v" / "events.csv")["client"].tolist() == [0, 1, 2, 3, 4, 0, 0, 1, 2]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.integers(-1, 3000), st.integers(-2**40, 2**40), st.none(), st.booleans(),
                          st.integers(-5, 5).map(float), st.integers(0, 50).map(np.int64)),
                min_size=1, max_size=3 * csvtext.MEMO_MIN_CELLS), st.booleans())
def test_client_ids_looked_up_are_written_as_each_cell_alone(ids, plain):
    """A long column of client ids (ints from -1: the server's rows) is written by table lookup,
    which grows to the largest id; any other column of ids (below -1, past the table's limit,
    empty cells, floats, bools, numpy ints) as before: the same bytes as the csv module."""
    if plain:  # the common case: every cell a client id
        ids = [abs(i) % 3000 - 1 if isinstance(i, int) and not isinstance(i, bool) else 7 for i in ids]
        ids += list(range(-1, csvtext.MEMO_MIN_CELLS))
    rows = [dict(_event(1, i), client=c) for i, c in enumerate(ids)]
    assert csvtext.csv_rows(rows, rec.EVENT_COLUMNS) == _row_by_row(rows, rec.EVENT_COLUMNS)
    values = [r for r in ids if r.__class__ is int]
    if plain:
        assert csvtext._id_texts(values) == list(map(str, values))  # looked up, grown as far as needed
        assert len(csvtext._ID_TEXT) > max(values) and csvtext._ID_TEXT[-1] == "-1"
    assert csvtext._id_texts([-2, 5]) is None and csvtext._id_texts([csvtext.ID_TEXT_MAX]) is None
