"""The console a run prints its progress and tables on.

On a terminal it is rich's own. Outside one (CI, ``nohup``, a pipe, a notebook's captured
output) rich lays text out at ``$COLUMNS`` or 80 columns, which cut the end-of-run table's
headers (``accura…``): there, a table is printed at its full natural width instead, whatever
``$COLUMNS`` says, and a line of text is not broken (a long run folder's path stays one
line, as a log reader searches it); round lines (``log``) keep the console's width.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

MAX_TABLE_COLUMNS = 400  # a wider table is cut there (no run table comes near it)


class RunConsole(Console):
    """rich's Console, with tables in full width and text unbroken where the output is not a terminal."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.is_terminal or kwargs.get("width") is not None:
            return super().print(*objects, **kwargs)
        if objects and all(isinstance(o, str) for o in objects):
            kwargs.setdefault("soft_wrap", True)
        tables = [o for o in objects if isinstance(o, Table)]
        if not tables:
            return super().print(*objects, **kwargs)
        options = self.options.update(max_width=MAX_TABLE_COLUMNS)
        needed = max(Measurement.get(self, options, table).maximum for table in tables)
        if needed <= self.width:
            return super().print(*objects, **kwargs)
        fixed = self._width  # rich's own setting (None: from $COLUMNS or 80): put back after
        self._width = needed
        try:
            return super().print(*objects, **kwargs)
        finally:
            self._width = fixed
