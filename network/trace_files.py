"""Reading capacity traces from files: mahimahi timestamps and 5Gophers throughput CSVs.

Every problem with a file raises TraceError, its message naming `file:line` where one applies.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from network.trace_types import OpportunityTrace, RateTrace, TraceError

MAX_TRACE_BYTES = 512 * 2**20  # the longest shipped mahimahi trace is ~2 MB
MAX_5G_SECONDS = 10**7  # a 5Gophers run is minutes of per-second samples; seq_num past ~4 months is no run
MAX_TIMESTAMP_MS = 2**53  # ~285,000 years; past it a float of seconds no longer holds every ms
_DIGITS = re.compile(r"[0-9]+")


def read_trace_text(path: str | Path) -> str:
    """A trace file's text; a path that is not a readable regular file of ASCII/UTF-8 text,
    or is larger than MAX_TRACE_BYTES, raises TraceError naming it (``file: (file): ...``)."""
    source = str(path)
    if "\x00" in source:
        raise TraceError(f"{source!r}: (file): the path contains a NUL byte")
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:
        raise TraceError(f"{source}: (file): cannot read trace: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise TraceError(f"{source}: (file): is a folder, expected a trace file")
    if not stat.S_ISREG(info.st_mode):
        raise TraceError(f"{source}: (file): is not a regular file (a device, pipe or socket)")
    if info.st_size > MAX_TRACE_BYTES:
        raise TraceError(f"{source}: (file): is {info.st_size:,} bytes, more than the {MAX_TRACE_BYTES:,} a trace may have")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TraceError(f"{source}: (file): cannot read trace: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TraceError(f"{source}: line {line}: not text (byte {exc.start}: {exc.reason})") from None


_LOADED: dict[tuple[str, int, int], OpportunityTrace] = {}  # (path, mtime_ns, size) -> its trace


def load_mahimahi(path: str | Path) -> OpportunityTrace:
    """Read a mahimahi trace file; problems raise TraceError naming `file: line N`. A file read
    before and unchanged since (same modification time and size) is not parsed again."""
    try:
        info = os.stat(path)
        key = (str(path), info.st_mtime_ns, info.st_size)
    except (OSError, ValueError):
        key = None
    if key is not None and key in _LOADED:
        return _LOADED[key]
    trace = parse_mahimahi(read_trace_text(path), source=str(path))
    if key is not None:
        _LOADED[key] = trace
    return trace


_PLAIN = re.compile(r"[0-9\n]*")  # digits and line breaks only: the fast path applies


def parse_mahimahi(text: str, *, source: str = "<trace>") -> OpportunityTrace:
    """Parse mahimahi trace text: one integer ms timestamp per line, non-decreasing, the last
    one > 0. Every problem raises TraceError reading ``source: line N: problem``."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and _PLAIN.fullmatch(text) and all(lines) and max(map(len, lines)) < 16:
        stamps_ms = np.array(lines, dtype=np.int64)  # < 16 digits: below 2^53, exact
        if stamps_ms[-1] > 0 and (stamps_ms.size < 2 or (np.diff(stamps_ms) >= 0).all()):
            return OpportunityTrace(tuple(stamps_ms.tolist()), source=source)
    stamps: list[int] = []  # line by line, naming the first problem
    for lineno, line in enumerate(text.splitlines(), start=1):
        stamps.append(_parse_timestamp(line.strip(), f"{source}: line {lineno}"))
        if len(stamps) > 1 and stamps[-1] < stamps[-2]:
            raise TraceError(
                f"{source}: line {lineno}: timestamp {stamps[-1]} decreases (previous {stamps[-2]})"
            )
    if not stamps:
        raise TraceError(f"{source}: line 1: empty trace, no timestamps")
    if stamps[-1] == 0:
        raise TraceError(f"{source}: line {len(stamps)}: trace must last > 0 ms, last is 0")
    return OpportunityTrace(tuple(stamps), source=source)


def _parse_timestamp(word: str, where: str) -> int:
    """One line's timestamp (ASCII digits, at most MAX_TIMESTAMP_MS), or TraceError at `where`."""
    if not word:
        raise TraceError(f"{where}: empty line, expected an integer ms timestamp")
    if not _DIGITS.fullmatch(word):
        if word[0] == "-" and _DIGITS.fullmatch(word[1:]):
            raise TraceError(f"{where}: negative timestamp {word[:40]}")
        raise TraceError(f"{where}: not an integer ms timestamp: {word[:40]!r}")
    if len(word) > 20 or int(word) > MAX_TIMESTAMP_MS:
        raise TraceError(f"{where}: timestamp {word[:40]} ms is past {MAX_TIMESTAMP_MS} ms (2^53), "
                         "the largest this model replays")
    return int(word)


FIVE_G_COLUMNS = (
    "protocol",
    "carrier",
    "num_tcp_conn",
    "server_location",
    "run_num",
    "seq_num",
    "throughput_mbps",
)


@dataclass(frozen=True)
class _Sample:
    """One row of a 5Gophers throughput CSV, with the line it came from."""

    lineno: int
    protocol: str
    carrier: str
    run: int
    seq: int
    throughput_mbps: float


def load_5g_throughput(
    path: str | Path, *, carrier: str, run: int, protocol: str = "TCP"
) -> RateTrace:
    """One 5Gophers run (per-second throughput samples) as a piecewise-constant rate.

    `carrier` is matched case-insensitively (SPRINT, TMOBILE, VERIZON); `run` is the
    `run_num`. Samples are ordered by `seq_num`; a missing second repeats the sample before.
    """
    source = str(path)
    samples = _read_5g(path, source)
    chosen = [
        s
        for s in samples
        if s.carrier.upper() == carrier.upper() and s.run == run and s.protocol == protocol
    ]
    if not chosen:
        runs = sorted({s.run for s in samples if s.carrier.upper() == carrier.upper()})
        raise TraceError(
            f"{source}: no {protocol} samples for carrier {carrier!r} run {run}; "
            f"runs of that carrier: {runs if runs else 'none'}"
        )
    return RateTrace(_per_second(chosen, source), step_s=1.0, source=f"{source}:{carrier}:{run}")


def _read_5g(path: str | Path, source: str) -> list[_Sample]:
    """Every row of a 5Gophers throughput CSV, checked."""
    text = read_trace_text(path)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{source}:1: empty file, expected a header")
        missing = [c for c in FIVE_G_COLUMNS if c not in header]
        if missing:
            raise TraceError(f"{source}:1: missing columns {missing}")
        cols = {name: header.index(name) for name in FIVE_G_COLUMNS}
        return [_parse_5g_row(row, cols, f"{source}:{n}", n) for n, row in enumerate(reader, 2)]
    except csv.Error as exc:
        raise TraceError(f"{source}: (file): not CSV: {exc}") from None


def _parse_5g_row(row: list[str], cols: dict[str, int], where: str, lineno: int) -> _Sample:
    """One CSV row as a sample, or TraceError at `where`."""
    if len(row) <= max(cols.values()):
        raise TraceError(f"{where}: expected {len(FIVE_G_COLUMNS)} fields, got {len(row)}")
    try:
        run, seq = int(row[cols["run_num"]]), int(row[cols["seq_num"]])
        mbps = float(row[cols["throughput_mbps"]])
    except ValueError:
        raise TraceError(
            f"{where}: run_num and seq_num must be ints, throughput a number"
        ) from None
    if seq > MAX_5G_SECONDS:
        raise TraceError(f"{where}: seq_num {seq} is past {MAX_5G_SECONDS} s; a run is minutes of samples")
    if seq < 0 or not (math.isfinite(mbps) and mbps >= 0):
        raise TraceError(
            f"{where}: seq_num must be >= 0 and throughput_mbps >= 0, got {seq}, {mbps}"
        )
    return _Sample(lineno, row[cols["protocol"]], row[cols["carrier"]], run, seq, mbps)


def _per_second(samples: Sequence[_Sample], source: str) -> list[float]:
    """Rates per second from seq 0 of the run; gaps repeat the previous sample."""
    by_seq: dict[int, _Sample] = {}
    for s in samples:
        if s.seq in by_seq:
            first = by_seq[s.seq].lineno
            raise TraceError(f"{source}:{s.lineno}: seq_num {s.seq} repeats line {first}")
        by_seq[s.seq] = s
    first, last = min(by_seq), max(by_seq)
    rates, rate = [], by_seq[first].throughput_mbps
    for seq in range(first, last + 1):
        rate = by_seq[seq].throughput_mbps if seq in by_seq else rate
        rates.append(rate)
    return rates

