"""Reading the files a scenario is or names (the scenario itself, datasets, availability
files, model configs) without surprises: a path with a NUL or an unknown `~user`, a folder,
`/dev/zero`, a file too large or not UTF-8 each become a :class:`FileProblem` naming the
path and what is wrong, never an exception of another kind and never an endless read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_INPUT_BYTES = 256 * 2**20  # no scenario, dataset or availability file of this project comes near


class FileProblem(ValueError):
    """A file that cannot be used; `path` is the file, `problem` what is wrong with it."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def input_path(text: str | os.PathLike[str]) -> Path:
    """`text` as a path, `~` expanded; a NUL byte or an unknown `~user` is a FileProblem."""
    raw = os.fspath(text)
    if "\x00" in raw:
        raise FileProblem(repr(raw), "the path contains a NUL byte")
    try:
        return Path(raw).expanduser()
    except RuntimeError:  # ~nosuchuser
        raise FileProblem(raw, "cannot expand '~' (no such user)") from None


def regular_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_INPUT_BYTES) -> Path:
    """The path, after checking it is an existing regular file of at most `max_bytes`."""
    path = input_path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileProblem(path, "file not found") from None
    except (OSError, ValueError) as exc:  # permission, name too long, loops, undecodable name
        raise FileProblem(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileProblem(path, "is a folder, expected a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem(path, "is not a regular file (a device, pipe or socket)")
    if info.st_size > max_bytes:
        raise FileProblem(path, f"is {info.st_size:,} bytes, more than the {max_bytes:,} an input file may have")
    return path


def read_bytes(path: str | os.PathLike[str], *, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file (see `regular_file`)."""
    path = regular_file(path, max_bytes=max_bytes)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise FileProblem(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise FileProblem(path, f"is more than the {max_bytes:,} bytes an input file may have")
    return data


def read_text(path: str | os.PathLike[str], *, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of a regular file (see `regular_file`); other encodings are a FileProblem."""
    data = read_bytes(path, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileProblem(input_path(path), f"not UTF-8 text (line {line}, byte {exc.start}: {exc.reason})") from None
