"""A long table's parquet copy is made block by block and reads back as the CSV does."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow.parquet as pq

from testbed.results import parquet_copy
from testbed.results.csvtext import INTEGER_COLUMNS, csv_rows
from testbed.results.recorder import CLIENT_ROUND_COLUMNS

_read_whole = parquet_copy._whole


def _rows(n: int) -> list[dict]:
    """Client rows whose learning metric is empty in the first few hundred rows, then set; an
    infinity, a quoted cell with a newline and a bool column among them."""
    return [dict(round=i // 100, client=i % 100, device="pixel-7", link="lte", outcome="ok", cause="",
                 n_samples=None if i < 300 else 8, train_loss=None if i < 300 else 1.0 / (i + 1),
                 host_compute_s=0.5, device_compute_s=math.inf if i == 5 else 2.0 * i, dilation_factor=4.0,
                 bound="compute", peak_rss_mb=100.0, memory_budget_mb=3276.0, over_memory_budget=i % 7 == 0,
                 bytes_down=1000, bytes_up=1000, sim_start_s=float(i), sim_end_s=i + 0.25, energy_j=None,
                 compute_energy_j=1.5, radio_energy_j=None, energy_note='a, "b"\nc' if i == 9 else "", host="vm")
            for i in range(n)]


def test_blocks_give_the_csv_back_with_each_column_typed(tmp_path, monkeypatch):
    csv = tmp_path / "client_rounds.csv"
    csv.write_text(",".join(CLIENT_ROUND_COLUMNS) + "\n" + csv_rows(_rows(1000), CLIENT_ROUND_COLUMNS))
    monkeypatch.setattr(parquet_copy, "BLOCK_BYTES", 4096)  # ~20 rows a block: many blocks, the first all-empty
    target = tmp_path / "client_rounds.parquet"
    parquet_copy.csv_to_parquet(csv, target, CLIENT_ROUND_COLUMNS, INTEGER_COLUMNS)

    assert pq.ParquetFile(target).num_row_groups > 10
    back, want = pd.read_parquet(target), pd.read_csv(csv)
    pd.testing.assert_frame_equal(back, want, check_dtype=False)
    types = {f.name: str(f.type) for f in pq.read_schema(target)}
    assert types["n_samples"] == "int64" and types["train_loss"] == "double" and types["energy_j"] == "double"
    assert types["over_memory_budget"] == "bool" and types["device"] == "string"
    assert back["device_compute_s"].iloc[5] == math.inf and back["energy_note"].iloc[9] == 'a, "b"\nc'
    assert back["train_loss"].isna().sum() == 300


def test_an_added_column_the_first_block_cannot_type_is_read_whole(tmp_path, monkeypatch):
    csv = tmp_path / "events.csv"
    lines = ["round,client,queue_s"] + [f"{i},{i}," for i in range(200)] + [f"{i},{i},x{i}" for i in range(200, 400)]
    csv.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(parquet_copy, "BLOCK_BYTES", 512)
    whole = []
    monkeypatch.setattr(parquet_copy, "_whole", lambda *a: whole.append(1) or _read_whole(*a))
    target = tmp_path / "events.parquet"
    parquet_copy.csv_to_parquet(csv, target, ["round", "client"], INTEGER_COLUMNS)

    assert whole == [1]
    back = pd.read_parquet(target)
    assert back["queue_s"].iloc[-1] == "x399" and back["queue_s"].iloc[:200].isna().all()


def test_a_table_of_empty_added_column_is_float(tmp_path):
    csv = tmp_path / "events.csv"
    csv.write_text("round,extra\n" + "".join(f"{i},\n" for i in range(50)))
    parquet_copy.csv_to_parquet(csv, tmp_path / "e.parquet", ["round"], INTEGER_COLUMNS)
    assert str(pq.read_schema(tmp_path / "e.parquet").field("extra").type) == "double"
