"""Where client compute really runs: in this process, or in one OS process per client."""

from testbed.backends.base import Backend, make_backend

__all__ = ["Backend", "make_backend"]
