"""Where a compose file's containers find what they need, with no host path in the file.

Every host folder a service mounts is written relative to the compose file's folder (compose
resolves a relative bind source against it), and mounted at a fixed place under ``/fedge``
inside, so the file works from its folder on any host whose files keep the same layout
around it (the project, its ``.venv``, the Python it was made from, the asset cache, the
scenario's inputs), wherever that layout sits:

| inside | host folder | |
| --- | --- | --- |
| ``/fedge/python`` | the Python the ``.venv`` was made from (``sys.base_prefix``) | ``PYTHONHOME`` |
| ``/fedge/project`` | the project (with its ``.venv`` where it holds it, else ``/fedge/venv``) | ``PYTHONPATH`` |
| ``/fedge/site/<k>`` | site-packages outside all of those (a user site), if any | ``PYTHONPATH`` |
| ``/fedge/cache`` | the asset cache (``TESTBED_CACHE``) | |
| ``/fedge/scenario`` | the scenario file's folder (server) | |
| ``/fedge/inputs/<k>`` | each folder of a file the scenario names, a model folder | ``--set`` |
| ``/fedge/run`` | the server's run folder | |

The ``.venv``'s own interpreter is a link to the host's Python by its absolute path, so the
containers run that Python as ``/fedge/python/bin/...`` (``PYTHONHOME`` says where it is,
``LD_LIBRARY_PATH`` where its shared library is) with the project and the ``.venv``'s
site-packages on ``PYTHONPATH``. The scenario's files reach the server as ``--set`` values
naming them inside (the scenario file's own relative paths lead elsewhere there).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from testbed.config.paths import TRACE_FIELDS
from testbed.config.scenario import LinkSpec, Scenario

INSIDE = PurePosixPath("/fedge")
PYTHON, VENV, PROJECT = INSIDE / "python", INSIDE / "venv", INSIDE / "project"
CACHE, SCENARIO, INPUTS, RUN = INSIDE / "cache", INSIDE / "scenario", INSIDE / "inputs", INSIDE / "run"


def real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def relative_source(host: Path, base: Path) -> str:
    """`host` relative to `base`, spelt as compose takes a bind source (``./x``, ``../x``, ``.``)."""
    rel = Path(os.path.relpath(host, base)).as_posix()
    return rel if rel == "." or rel == ".." or rel.startswith("../") else f"./{rel}"


@dataclass(frozen=True)
class Mount:
    host: Path
    inside: PurePosixPath
    mode: str  # ro | rw

    def volume(self, base: Path) -> str:
        return f"{relative_source(self.host, base)}:{self.inside}:{self.mode}"


class Layout:
    """The mounts of a compose file written into `compose_dir`, and the container paths of
    the host paths its services name."""

    def __init__(self, compose_dir: str | os.PathLike[str], project_dir: Path, cache: Path) -> None:
        self.base = real(compose_dir)
        self.project, self.cache = real(project_dir), real(cache)
        self.python_prefix, self.venv = real(sys.base_prefix), real(sys.prefix)
        roots = [(self.python_prefix, PYTHON), (self.project, PROJECT)]
        if not _under(self.venv, self.project) and self.venv != self.python_prefix:
            roots.append((self.venv, VENV))
        self.site = list(dict.fromkeys(real(sysconfig.get_path(kind)) for kind in ("purelib", "platlib")))
        for k, site in enumerate(s for s in self.site if not any(_under(s, host) for host, _ in roots)):
            roots.append((site, INSIDE / "site" / str(k)))  # packages outside the prefixes (a user site)
        self.runtime = [Mount(host, inside, "ro") for host, inside in roots]

    def inside(self, host: str | os.PathLike[str], mounts: list[Mount] | None = None) -> PurePosixPath:
        """`host` (a path under one of `mounts`, by default the runtime's) inside the container."""
        path = real(host)
        for mount in sorted(mounts or self.runtime, key=lambda m: len(m.host.parts), reverse=True):
            if _under(path, mount.host):
                return mount.inside.joinpath(*path.relative_to(mount.host).parts)
        raise ValueError(f"{path} is under none of the mounted folders")

    def python_env(self) -> dict[str, str]:
        """The environment that runs the host's Python with the project's packages inside."""
        site = [str(PROJECT), *(str(self.inside(s)) for s in self.site)]
        return {"PYTHONHOME": str(PYTHON), "PYTHONPATH": ":".join(site), "PYTHONNOUSERSITE": "1",
                "LD_LIBRARY_PATH": str(PYTHON / "lib")}

    def executable(self) -> str:
        """The interpreter inside."""
        return str(self.inside(os.path.realpath(sys.executable)))


def scenario_inputs(scenario: Scenario) -> list[tuple[str, Path, bool]]:
    """(field, host path, is a folder) of every file or folder the scenario names."""
    found: list[tuple[str, Path, bool]] = []
    if scenario.dataset.path:
        found.append(("dataset.path", Path(scenario.dataset.path), False))
    if scenario.availability.path:
        found.append(("availability.path", Path(scenario.availability.path), False))
    for i, entry in enumerate(scenario.fleet):
        if isinstance(entry.link, LinkSpec):
            found += [(f"fleet.{i}.link.{key}", Path(getattr(entry.link, key)), False)
                      for key in TRACE_FIELDS if getattr(entry.link, key)]
    if Path(scenario.model).is_absolute() and Path(scenario.model).is_dir():
        found.append(("model", Path(scenario.model), True))
    return found


def input_mounts(scenario: Scenario) -> tuple[list[Mount], list[str]]:
    """A read-only mount per folder holding a file the scenario names (a model folder: itself),
    and the `--set` assignments that name each file there."""
    folders: dict[Path, PurePosixPath] = {}
    sets = []
    for field, host, is_folder in scenario_inputs(scenario):
        folder = real(host if is_folder else host.parent)
        inside = folders.setdefault(folder, INPUTS / str(len(folders)))
        sets.append(f"{field}={inside if is_folder else inside / host.name}")
    return [Mount(host, inside, "ro") for host, inside in folders.items()], sets


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
