"""``testbed profiles``: print the device and link catalogs."""

from __future__ import annotations

from typing import Any


def add_parser(subparsers: Any) -> None:
    """Add ``profiles`` to the ``testbed`` command."""
    subparsers.add_parser("profiles", help="print the device and link catalogs")


def cmd_profiles(args) -> int:
    from rich.console import Console

    from device_profiles import catalog_tables

    console = Console()
    for table in catalog_tables():
        console.print(table)
    return 0
