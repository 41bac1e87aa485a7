"""Where client compute really runs: in this process, in one OS process per client, in one
container per client, or in one Ray actor per client. Imported lazily: a container's supervisor (http_worker) imports this
package without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.backends.base import Backend
    from testbed.backends.registry import make_backend

__all__ = ["Backend", "make_backend"]


def __getattr__(name: str) -> Any:
    if name == "Backend":
        from testbed.backends.base import Backend

        return Backend
    if name == "make_backend":
        from testbed.backends.registry import make_backend

        return make_backend
    raise AttributeError(f"module 'testbed.backends' has no attribute {name!r}")
