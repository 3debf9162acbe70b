"""Opening HDF5 files at the data edge, local or in object storage: every failure becomes a one-line error.

A file in object storage (``s3://bucket/key``) is read through an fsspec file object (h5py
takes file-like objects) with a block cache: HDF5 asks for the byte ranges of its metadata
and of the chunks a read touches, and only the blocks holding them are fetched, never the
whole object. Blocks are sized by the caller to the file's chunks (:func:`block_size`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter that shards are compressed with)

from geoseg_batch.errors import DataError
from geoseg_batch.io.urls import Location, is_url

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

MIN_BLOCK = 256 * 2**10  # the smallest block fetched from object storage (HDF5's metadata comes in small reads)
HEADER_BLOCK = MIN_BLOCK  # the block of a file whose chunks are not known yet (a header read: metadata only)
CACHED_BLOCKS = 16  # blocks an open remote file keeps: a read block of chips, and the metadata beside it


def block_size(chunk_bytes: int) -> int:
    """The block fetched from object storage for a file of ``chunk_bytes`` chunks (uncompressed: an upper
    bound of a stored chunk), at least :data:`MIN_BLOCK`, in whole KiB."""
    return max(MIN_BLOCK, -(-int(chunk_bytes) // 1024) * 1024)


@contextlib.contextmanager
def open_hdf5(path: Location, cloud: CloudSettings | None = None, block: int = HEADER_BLOCK) -> Iterator[h5py.File]:
    """``h5py.File(path, "r")``; for a URL, over a file object of ``cloud``'s store caching blocks of ``block``
    bytes. An unreadable file or a read failing inside the block is a DataError; a missing, refused or
    unreachable object the one-line errors of :mod:`geoseg_batch.io.remote`."""
    with contextlib.ExitStack() as stack:
        if is_url(path):
            from geoseg_batch.io.remote import CloudSettings, open_object

            source = stack.enter_context(open_object(str(path), cloud or CloudSettings.of(), block, CACHED_BLOCKS))
        else:
            source = Path(path)
        try:
            with h5py.File(source, "r") as handle:
                yield handle
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 file (truncated or not HDF5): {exc}") from None


def require(handle: h5py.File, key: str, path: Location, hint: str) -> h5py.Dataset:
    """The dataset ``key``, or a DataError listing what the file has and ``hint``."""
    if key not in handle:
        raise DataError(f"{path}: dataset '{key}' not found (found: {sorted(handle.keys())}); {hint}")
    return handle[key]
