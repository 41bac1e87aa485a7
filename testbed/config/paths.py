"""Where the paths a scenario names lead.

A path written in a scenario file (``dataset.path``, ``availability.path``, an inline link's
``trace_up``/``trace_down``, a ``model`` folder) is relative to that file's folder, as in a
compose file, so a scenario runs the same from any directory and moves with its files.
``output`` (the run folder), ``--out`` and ``--set`` values are relative to the current
directory, as command-line paths are; so is every path of a scenario built in memory.
Bundled names are never paths: a catalogue link (``lte``), a bundled dataset (``bbc-news``:
``dataset.name``), a bundled model (``smollm2-135m``), and a hub id (``org/name``) unless
a folder of that name is there.

The validated scenario holds every path absolute (``~`` expanded, ``.``/``..`` folded,
symbolic links kept), so nothing after loading depends on the current directory: the
scenario copy a run folder records (``scenario.yaml``) reads the same from anywhere. A run
resumes from any directory, and its folder may move: ``--resume DIR`` compares that copy with
the scenario given, field by field, except ``output`` (where the folder was first asked for).
The files the scenario names must stay where they were: another path is another scenario.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUNDLED_MODELS = ("smollm2-135m", "tiny-llama")  # testbed.ml.assets.MODEL_NAMES (a test keeps them equal)
TRACE_FIELDS = ("trace_down", "trace_up")
PATH_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")


def absolute(value: Any, base: Path) -> Any:
    """`value` as an absolute path against `base`, if it is text that is a path; anything
    else as it is (the schema refuses it with its own message)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return value
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~nosuchuser: the reference check names it
        return value
    return os.path.normpath(os.path.join(base, path))


def model_is_path(spec: Any, base: Path) -> bool:
    """Whether a `model` value is a folder path (against `base`) rather than a bundled name or
    hub id: it starts like a path (``./``, ``../``, ``/``, ``~``) or names a folder there."""
    if not isinstance(spec, str) or not spec or spec in BUNDLED_MODELS or "\x00" in spec:
        return False
    if spec.startswith(PATH_PREFIXES) or spec in (".", ".."):
        return True
    try:
        return (base / spec).is_dir()
    except (OSError, ValueError):
        return False


def file_fields(raw: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(mapping, key, field) of every file field present in a raw scenario mapping: the places
    whose text is a path (`model` is one only where model_is_path says so)."""
    for section in ("dataset", "availability"):
        node = raw.get(section)
        if isinstance(node, dict) and "path" in node:
            yield node, "path", f"{section}.path"
    fleet = raw.get("fleet")
    for i, entry in enumerate(fleet if isinstance(fleet, list) else ()):
        link = entry.get("link") if isinstance(entry, dict) else None
        if isinstance(link, dict):  # a name (`lte`) is a catalogue entry, never a path
            yield from ((link, key, f"fleet.{i}.link.{key}") for key in TRACE_FIELDS if key in link)


def _under(field: str, key: str | None) -> bool:
    return key is None or field == key or field.startswith(key + ".")


def resolve_file_paths(raw: dict[str, Any], base: str | os.PathLike[str], *, only: str | None = None) -> None:
    """Every file field of a raw scenario mapping (and `model`, where a path) made absolute
    against `base`, in place; with `only` (a `--set` key, e.g. `fleet.0.link`), just the fields
    at or under it. Values already absolute stay as they are."""
    base = Path(os.path.abspath(base))
    for node, key, field in file_fields(raw):
        if _under(field, only):
            node[key] = absolute(node[key], base)
    if _under("model", only) and model_is_path(raw.get("model"), base):
        raw["model"] = absolute(raw["model"], base)
