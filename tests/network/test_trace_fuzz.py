"""Fuzzing mahimahi traces (lines of the real ones under ../shared/data/traces, mutated; strategies
in tests/fuzzing.py): the parser returns a trace or raises TraceError with one
``file: line N: problem`` line, and `testbed validate` of a scenario whose link names the file
accepts it or refuses it in one ``error:`` line naming that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from network import OpportunityTrace, TraceError, load_mahimahi
from tests.fuzzing import TRACE_LINES, assert_clean, share, trace_bytes, trace_case

pytestmark = pytest.mark.skipif(not TRACE_LINES, reason="no mahimahi traces under ../shared/data/traces")
TRACE_ERROR = re.compile(r"^\S+: (line \d+|\(file\)): [^\n]+$")


def test_real_trace_slices_are_there_to_mutate() -> None:
    assert len(TRACE_LINES) >= 10 and all(lines for lines in TRACE_LINES.values())


def test_trace_files_load_or_fail_with_one_line_naming_file_and_line(tmp_path: Path) -> None:
    @share(1)
    @given(trace_bytes())
    def check(content: bytes) -> None:
        path = tmp_path / "t.up"
        path.write_bytes(content)
        try:
            trace = load_mahimahi(path)
        except TraceError as exc:
            assert TRACE_ERROR.match(str(exc)) and str(exc).startswith(str(path)), str(exc)
            return
        assert isinstance(trace, OpportunityTrace) and trace.period_ms > 0

    check()


def test_scenarios_naming_fuzzed_traces_validate_or_are_refused_in_one_line(tmp_path: Path, assets) -> None:
    @share(2 / 3)
    @given(trace_bytes(), st.sampled_from(["up", "down"]))
    def check(content: bytes, direction: str) -> None:
        outcome = trace_case(content, direction, tmp_path)
        assert_clean(outcome, content)
        if outcome.code == 2:  # only the trace can be wrong: its problem names it first, then who named it
            trace = tmp_path / f"t.{direction}"
            assert outcome.err.startswith(f"error: {trace}: "), outcome.err
            assert outcome.err.endswith(f" (from {tmp_path / 's.yaml'} fleet.0.link.trace_{direction})\n"), outcome.err

    check()


def test_trace_files_at_odd_paths_are_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"^'a\\x00b': \(file\): the path contains a NUL byte$"):
        load_mahimahi("a\x00b")
    with pytest.raises(TraceError, match=rf"^{tmp_path}: \(file\): is a folder, expected a trace file$"):
        load_mahimahi(tmp_path)
    with pytest.raises(TraceError, match=r"^/dev/zero: \(file\): is not a regular file \(a device, pipe or socket\)$"):
        load_mahimahi("/dev/zero")
    (tmp_path / "t.up").write_bytes(b"5\n\xff7\n")
    with pytest.raises(TraceError, match=r"t\.up: line 2: not text \(byte 2: invalid start byte\)$"):
        load_mahimahi(tmp_path / "t.up")
    (tmp_path / "t.up").write_text("5\n\u0663\n")  # an Arabic-Indic 3: int() reads it, mahimahi does not
    with pytest.raises(TraceError, match=r"t\.up: line 2: not an integer ms timestamp: '\u0663'$"):
        load_mahimahi(tmp_path / "t.up")


def test_a_5gophers_sample_far_past_any_run_is_refused_not_expanded(tmp_path: Path) -> None:
    from network.traces import FIVE_G_COLUMNS, load_5g_throughput

    path = tmp_path / "5g.csv"
    path.write_text(",".join(FIVE_G_COLUMNS) + "\nTCP,VERIZON,1,US-East,7,0,10.0\nTCP,VERIZON,1,US-East,7,"
                    + "9" * 30 + ",5.0\n")
    with pytest.raises(TraceError, match=r"5g\.csv:3: seq_num 9{30} is past 10000000 s; a run is minutes of samples"):
        load_5g_throughput(path, carrier="VERIZON", run=7)
