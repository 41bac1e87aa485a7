"""The backends by name (`emulation.backend`), tried in order, first match wins (PEFT's
dispatchers). Each entry imports its class only when chosen: docker and the process pool pull
in what the others never need, and a container's supervisor imports this package without torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from testbed.backends.base import Backend
    from testbed.protocol import Client, ClientSpec


def _inproc() -> type[Backend]:
    from testbed.backends.inproc import InprocBackend

    return InprocBackend


def _data_parallel() -> type[Backend]:
    from testbed.backends.dataparallel import DataParallelBackend

    return DataParallelBackend


def _process() -> type[Backend]:
    from testbed.backends.process import ProcessBackend

    return ProcessBackend


def _docker() -> type[Backend]:
    from testbed.backends.docker_backend import DockerBackend

    return DockerBackend


def _ray() -> type[Backend]:
    from testbed.backends.ray_backend import RayBackend

    return RayBackend


@dataclass(frozen=True)
class BackendEntry:
    name: str  # the `emulation.backend` value it serves
    data_parallel: bool  # serves the data-parallel worker layout (one client's batch over ranks)
    load: Callable[[], type[Backend]]  # the class, imported on first use


BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry("inproc", False, _inproc),
    BackendEntry("process", True, _data_parallel),
    BackendEntry("process", False, _process),
    BackendEntry("docker", False, _docker),
    BackendEntry("ray", False, _ray),
)


def backend_names() -> list[str]:
    return list(dict.fromkeys(e.name for e in BACKENDS))


def make_backend(kind: str, client_class: type[Client], specs: list[ClientSpec], *, data_parallel: bool = False,
                 **options) -> Backend:
    """The backend `kind` for the worker layout asked for (`data_parallel` where one exists,
    else the backend's own), built with `options`."""
    named = [e for e in BACKENDS if e.name == kind]
    if not named:
        raise ValueError(f"emulation.backend: unknown backend '{kind}'; supported: {', '.join(backend_names())}")
    entry = next((e for e in named if e.data_parallel == data_parallel), named[-1])
    return entry.load()(client_class, specs, **options)
