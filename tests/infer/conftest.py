"""Fixtures for inference tests: an in-process cluster (bundles and scenes come from tests.helpers)."""

from __future__ import annotations

import pytest

from tests.helpers import local_client


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster (threads): fast to start, shares this process's TensorFlow."""
    with local_client(2, processes=False) as c:
        yield c
