"""Where client compute really runs: in this process, in one OS process per client, or in one
container per client. Imported lazily: a container's supervisor (http_worker) imports this
package without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.backends.base import Backend, make_backend

__all__ = ["Backend", "make_backend"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from testbed.backends import base

        return getattr(base, name)
    raise AttributeError(f"module 'testbed.backends' has no attribute {name!r}")
