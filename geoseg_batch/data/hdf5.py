"""Opening HDF5 files at the data edge: every failure becomes a DataError naming the file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter that shards are compressed with)

from geoseg_batch.errors import DataError


@contextlib.contextmanager
def open_hdf5(path: Path) -> Iterator[h5py.File]:
    """``h5py.File(path, "r")``; an unreadable file or a read failing inside the block is a DataError."""
    try:
        with h5py.File(path, "r") as handle:
            yield handle
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or not HDF5): {exc}") from None


def require(handle: h5py.File, key: str, path: Path, hint: str) -> h5py.Dataset:
    """The dataset ``key``, or a DataError listing what the file has and ``hint``."""
    if key not in handle:
        raise DataError(f"{path}: dataset '{key}' not found (found: {sorted(handle.keys())}); {hint}")
    return handle[key]
