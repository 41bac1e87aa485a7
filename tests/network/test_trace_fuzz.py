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
    @share(1 / 3)
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
    @share(1 / 3)
    @given(trace_bytes(), st.sampled_from(["up", "down"]))
    def check(content: bytes, direction: str) -> None:
        outcome = trace_case(content, direction, tmp_path)
        assert_clean(outcome, content)
        if outcome.code == 2:  # only the trace can be wrong: its problem names it first, then who named it
            trace = tmp_path / f"t.{direction}"
            assert outcome.err.startswith(f"error: {trace}: "), outcome.err
            assert outcome.err.endswith(f" (from {tmp_path / 's.yaml'} fleet.0.link.trace_{direction})\n"), outcome.err

    check()
