"""Two run tables, cell by cell: what the golden runs (and their recording) call equal.

Facts measured on the host (`host_*` columns, peak memory, ONNX export time) are left out;
floats must agree to 1e-9 relative for simulated quantities and to 1e-4 for learning metrics
(fp32 kernels may round differently on another CPU); everything else as text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# facts measured on the host, not decided by the simulation: left out of the comparison
HOST_COLUMNS_PREFIX = "host_"
HOST_COLUMNS = frozenset({"peak_rss_mb", "over_memory_budget", "onnx_export_s"})
# columns added after the golden runs were recorded, both host facts: dropped before comparing
ADDED_COLUMNS = ("host",)
LEARNING = ("loss", "accuracy", "agreement", "kl", "ort_")  # column names holding learned values


def _compared_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if not c.startswith(HOST_COLUMNS_PREFIX) and c not in HOST_COLUMNS]


def _rtol(column: str) -> float:
    return 1e-4 if any(word in column for word in LEARNING) else 1e-9


def _text(column: pd.Series) -> np.ndarray:
    return np.array(["" if pd.isna(v) else str(v) for v in column], dtype=object)


def assert_tables_equal(expected: pd.DataFrame, actual: pd.DataFrame, table: str) -> None:
    actual = actual.drop(columns=[c for c in ADDED_COLUMNS if c in actual.columns and c not in expected.columns])
    assert list(actual.columns) == list(expected.columns), f"{table}: columns differ"
    assert len(actual) == len(expected), f"{table}: {len(actual)} rows, golden {len(expected)}"
    for column in _compared_columns(expected):
        want, got = expected[column], actual[column]
        if pd.api.types.is_numeric_dtype(want) and pd.api.types.is_numeric_dtype(got):
            close = np.isclose(got.to_numpy(float), want.to_numpy(float), rtol=_rtol(column), atol=1e-9,
                               equal_nan=True)
        else:
            close = _text(got) == _text(want)
        bad = np.flatnonzero(~close)
        assert bad.size == 0, (f"{table}: column {column!r} differs in {bad.size} rows, first row {bad[0]}: "
                               f"golden {want.iloc[bad[0]]!r}, now {got.iloc[bad[0]]!r}")
