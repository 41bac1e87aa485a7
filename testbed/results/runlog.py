"""``run.log``: what a ``testbed run`` shows on its console, kept in its run folder.

While a run goes on, ``sys.stdout`` and ``sys.stderr`` are tees (:class:`RunLog`): every line
written to them (the rich console's round lines and table, warnings, library logging that
goes to stderr, tracebacks) goes to the terminal as before and, as plain text, to
``<run folder>/run.log``. Colours and cursor movements are not kept: the log holds the text
a terminal ends up showing (:class:`PlainText`), so a progress bar redrawn ten times a second
leaves its last state, not a thousand copies.

The folder is known only once the scenario is read; what is written before that waits in
memory and goes first into the file. ``--quiet`` turns the terminal side off (errors are
still shown: :meth:`RunLog.error`); ``--json`` sends what would have gone to stdout to
stderr, so that stdout holds the one JSON document alone.

Output that a client worker process writes to its own stderr goes to the terminal, not here:
workers report their errors to the server, which records them in the run's tables.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

LOG_NAME = "run.log"
# ESC [ params final: colours, cursor moves, erase; ESC ] ... BEL/ST: window titles, links
_CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_HELD_LINES = 8  # finished lines a cursor-up may still reach (a progress display's height)


class PlainText:
    """Terminal text -> the lines a terminal ends up showing: ``\\r`` and erase-line
    (``ESC[2K``) clear the current line, cursor-up (``ESC[nA``) goes back into the last
    :data:`_HELD_LINES` lines, other escape sequences are dropped. :meth:`feed` returns the
    lines that can no longer change: every finished line, until the text first moves the
    cursor up (a live display of several lines, on a terminal); from then on the last few
    are held back."""

    def __init__(self) -> None:
        self._held: list[str] = []  # finished lines, the last few (still reachable by cursor-up)
        self._current = ""
        self._hold = 0  # lines held back: _HELD_LINES once a cursor-up was seen

    def feed(self, text: str) -> list[str]:
        text = _OSC.sub("", text)
        pos = 0
        for match in _CSI.finditer(text):
            self._put(text[pos:match.start()])
            self._control(match.group(1), match.group(2))
            pos = match.end()
        self._put(text[pos:])
        keep = len(self._held) - min(self._hold, len(self._held))
        done, self._held = self._held[:keep], self._held[keep:]
        return done

    def close(self) -> list[str]:
        """Every line left, the unfinished one too (if not empty)."""
        done = self._held + ([self._current] if self._current.strip() else [])
        self._held, self._current = [], ""
        return done

    def _put(self, text: str) -> None:
        for i, part in enumerate(text.split("\n")):
            if i:
                self._held.append(self._current.rstrip())
                self._current = ""
            if "\r" in part:  # back to the line's start: what follows overwrites it (as a whole, for a log)
                self._current = ""
                part = part.rsplit("\r", 1)[1]
            self._current += part

    def _control(self, params: str, final: str) -> None:
        if final == "K":  # erase in line
            self._current = ""
        elif final == "A":  # cursor up n lines: that line becomes the current one again
            self._hold = _HELD_LINES
            for _ in range(int(params) if params.isdigit() else 1):
                if self._held:
                    self._current = self._held.pop()
        # anything else (colours, cursor show/hide, columns) leaves the text as it is


class _Tee(io.TextIOBase):
    """A text stream that writes to a terminal stream (unless hidden) and to the run log."""

    def __init__(self, log: RunLog, terminal: TextIO, visible: bool) -> None:
        self._log: RunLog | None = log
        self._terminal, self._visible = terminal, visible
        self._binary: _BinaryTee | None = None

    def write(self, text: str) -> int:
        if self._visible:
            self._terminal.write(text)
        if self._log is not None:
            self._log.record(text)
        return len(text)

    @property
    def buffer(self) -> _BinaryTee:
        """Bytes written here (e.g. a container's streamed output) are decoded and teed alike."""
        if self._binary is None:
            self._binary = _BinaryTee(self)
        return self._binary

    def detach(self) -> None:
        """After the run: the terminal's stream as it was (a logging handler made during the
        run, e.g. transformers', may keep this object as its stream)."""
        self._log, self._visible = None, True

    def flush(self) -> None:
        if self._visible:
            self._terminal.flush()

    def isatty(self) -> bool:  # rich draws a live progress bar only where the text is seen on a terminal
        return self._visible and self._terminal.isatty()

    def fileno(self) -> int:
        return self._terminal.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._terminal, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True


class _BinaryTee:
    """The ``buffer`` of a :class:`_Tee`: UTF-8 bytes in (a character may span two writes)."""

    def __init__(self, tee: _Tee) -> None:
        self._tee = tee
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> int:
        self._tee.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self._tee.flush()


class RunLog:
    """Tee ``sys.stdout`` and ``sys.stderr`` into ``run.log`` for the ``with`` block.

    ``quiet``: nothing reaches the terminal but :meth:`error` lines. ``stdout_to_stderr``:
    what is printed to stdout goes to stderr (``--json``). Lines are kept in memory until
    :meth:`attach` names the file; then every finished line is appended to it as it comes
    (:class:`PlainText`), so a run killed mid-way leaves its log up to then."""

    def __init__(self, *, quiet: bool = False, stdout_to_stderr: bool = False) -> None:
        self.quiet = quiet
        self._stdout_to_stderr = stdout_to_stderr
        self._plain = PlainText()
        self._lock = threading.Lock()
        self._lines: list[str] = []  # every line of this run, for a file emptied under us (--overwrite)
        self._path: Path | None = None
        self._base = 0  # bytes the file held before this run (a resumed run appends)
        self._written = 0  # bytes of ours in the file
        self._saved: tuple[TextIO, TextIO] | None = None
        self._tees: tuple[_Tee, ...] = ()
        self.errors: TextIO = sys.stderr  # in the `with` block: the terminal's stderr (even under quiet) and the log
        self._lines.append(f"# testbed {package_version()} run at {datetime.now(timezone.utc).isoformat()} "
                           f"(pid {os.getpid()}): {' '.join(sys.argv)}")

    @property
    def path(self) -> Path | None:
        return self._path

    def __enter__(self) -> RunLog:
        self._saved = (sys.stdout, sys.stderr)
        out, err = self._saved
        sys.stdout = _Tee(self, err if self._stdout_to_stderr else out, visible=not self.quiet)
        sys.stderr = _Tee(self, err, visible=not self.quiet)
        self.errors = _Tee(self, err, visible=True)
        self._tees = (sys.stdout, sys.stderr, self.errors)
        return self

    def __exit__(self, *exc) -> None:
        assert self._saved is not None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = self._saved
        self.errors = sys.stderr
        for tee in self._tees:
            tee.detach()
        with self._lock:
            self._commit(self._plain.close())

    def attach(self, run_dir: Path, *, append: bool) -> Path:
        """Write the log to ``run_dir/run.log`` from now on, starting with what was held in
        memory; ``append``: after what the file holds (a resumed run), else in its place."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOG_NAME
        with self._lock:
            self._base = path.stat().st_size if append and path.is_file() else 0
            self._path, self._written = path, 0
            self._rewrite()
        return path

    def record(self, text: str) -> None:
        """Text written to a tee: its finished lines go to the log (from any thread)."""
        with self._lock:
            self._commit(self._plain.feed(text))

    def error(self, line: str) -> None:
        """A line shown on the terminal's stderr even under ``quiet``, and logged."""
        self.errors.write(line + "\n")
        self.errors.flush()

    def _commit(self, lines: list[str]) -> None:
        if not lines:
            return
        self._lines.extend(lines)
        if self._path is None:
            return
        text = "".join(f"{line}\n" for line in lines)
        try:
            if not self._intact():
                self._rewrite()  # the folder was emptied (--overwrite) after we started: all again
                return
            with self._path.open("a", encoding="utf-8") as f:
                f.write(text)
            self._written += len(text.encode())
        except OSError:
            pass  # a full disk or a removed folder: the terminal still shows it all

    def _intact(self) -> bool:
        try:
            return self._path.stat().st_size >= self._base + self._written
        except OSError:
            return False

    def _rewrite(self) -> None:
        assert self._path is not None
        text = "".join(f"{line}\n" for line in self._lines)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            if self._base and self._path.is_file():
                with self._path.open("r+b") as f:  # keep the earlier runs' part, replace ours
                    f.truncate(self._base)
                with self._path.open("a", encoding="utf-8") as f:
                    f.write(text)
            else:
                self._base = 0
                self._path.write_text(text, encoding="utf-8")
            self._written = len(text.encode())
        except OSError:
            pass


def package_version() -> str:
    """fedge-testbed's installed version (importlib.metadata), or ``unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedge-testbed")
    except PackageNotFoundError:
        return "unknown"
