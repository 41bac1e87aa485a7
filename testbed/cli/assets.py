"""``testbed assets``: fetch and convert the bundled model and data (offline afterwards)."""

from __future__ import annotations

from typing import Any


def add_parser(subparsers: Any) -> None:
    """Add ``assets`` to the ``testbed`` command."""
    subparsers.add_parser("assets", help="fetch and convert the bundled model and data (offline afterwards)")


def cmd_assets(args) -> int:
    from testbed.ml.assets import bbc_news_dir, smollm2_dir, tiny_llama_dir

    for name, fn in (("smollm2-135m", smollm2_dir), ("tiny-llama", tiny_llama_dir), ("bbc-news", bbc_news_dir)):
        print(f"{name}: {fn()}")
    return 0
