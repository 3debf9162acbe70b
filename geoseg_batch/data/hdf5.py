"""Opening HDF5 files at the data edge, local or in object storage: every failure becomes a one-line error.

A file in object storage (``s3://bucket/key``) is read through an fsspec file object (h5py
takes file-like objects): HDF5 asks for the byte ranges of its metadata and of the chunks a
read touches, and only those ranges are fetched, never the whole object. A header read
fetches small blocks (:data:`HEADER_BLOCK`); chip reads (``keep=True``) fetch blocks sized by
the caller to the file's chunks (:func:`block_size`), read ahead so that a run of
consecutive chunks comes in one request, and keep the file open for the next read (at most
:data:`KEPT_FILES` files, each for :data:`KEEP_OPEN_S`): HDF5's metadata is then read once,
not on every read. Remote files are used one thread at a time (h5py's file-object driver
calls back into Python from inside HDF5; concurrent use crashes); h5py serialises HDF5
calls anyway, so what waits is the network, which the read-ahead keeps to a request per read.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter that shards are compressed with)

from geoseg_batch.errors import DataError
from geoseg_batch.io.urls import Location, is_url

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

MIN_BLOCK = 256 * 2**10  # the smallest block fetched from object storage (HDF5's metadata comes in small reads)
HEADER_BLOCK = MIN_BLOCK  # the block of a file whose chunks are not known yet (a header read: metadata only)
HEADER_BLOCKS = 8  # blocks a header read keeps (superblock, object headers, the chunk index, chip ids)
KEPT_FILES = 8  # remote files kept open (a shard each) for the next read; the oldest is closed first
KEEP_OPEN_S = 120.0  # the longest a remote file is kept open (an object replaced meanwhile is seen after)

_REMOTE = threading.RLock()  # held around every use of a remote file, and of _KEPT
_KEPT: collections.OrderedDict[tuple[Any, ...], tuple[float, Any, h5py.File]] = collections.OrderedDict()
"""The remote files kept open: (url, settings, block) -> (opened at, file object, h5py.File), oldest first.
Process-wide, not per thread: TensorFlow runs the readers in its own threads, whose Python
thread state (and so any threading.local) is discarded after every call."""


def block_size(chunk_bytes: int) -> int:
    """The block fetched from object storage for reads of ``chunk_bytes`` (uncompressed chunks: an upper bound
    of the stored bytes), at least :data:`MIN_BLOCK`, in whole KiB."""
    return max(MIN_BLOCK, -(-int(chunk_bytes) // 1024) * 1024)


@contextlib.contextmanager
def open_hdf5(path: Location, cloud: CloudSettings | None = None, block: int = HEADER_BLOCK,
              keep: bool = False) -> Iterator[h5py.File]:
    """``h5py.File(path, "r")``; for a URL, over a file object of ``cloud``'s store fetching ``block`` bytes at
    a time (``keep``: read ahead, and kept open in this thread for the next read). An unreadable file or a read
    failing inside the block is a DataError; a missing, refused or unreachable object the one-line errors of
    :mod:`geoseg_batch.io.remote`."""
    with contextlib.ExitStack() as stack:
        if is_url(path):  # one thread at a time (see the module's docstring)
            stack.enter_context(_REMOTE)
        try:
            if not is_url(path):
                handle = stack.enter_context(h5py.File(Path(path), "r"))
            elif keep:
                handle = _kept_file(str(path), cloud, block)
            else:
                handle = stack.enter_context(h5py.File(stack.enter_context(_remote(str(path), cloud, block)), "r"))
            yield handle
        except OSError as exc:
            if keep and is_url(path):
                _forget(str(path))
            raise DataError(f"{path}: not a readable HDF5 file (truncated or not HDF5): {exc}") from None


def _remote(url: str, cloud: CloudSettings | None, block: int, cache_type: str = "blockcache") -> Any:
    """The fsspec file object of ``url`` (``cache_type``: ``blockcache`` for header reads, ``readahead``)."""
    from geoseg_batch.io.remote import CloudSettings, open_object

    return open_object(url, cloud or CloudSettings.of(), block, cache_type, HEADER_BLOCKS)


def _kept_file(url: str, cloud: CloudSettings | None, block: int) -> h5py.File:
    """The HDF5 file at ``url`` as kept open (opened now when it is not, or has been too long); under _REMOTE."""
    kept = _KEPT
    key, now = (url, cloud, block), time.monotonic()
    for stale in [k for k, (opened, _, _) in kept.items() if now - opened > KEEP_OPEN_S]:
        _close(kept.pop(stale))
    if key not in kept:
        source = _remote(url, cloud, block, "readahead")
        kept[key] = (now, source, h5py.File(source, "r"))
        while len(kept) > KEPT_FILES:
            _close(kept.popitem(last=False)[1])
    kept.move_to_end(key)
    return kept[key][2]


def _forget(url: str) -> None:
    """Close and drop the kept files of ``url`` (after a failed read); under _REMOTE."""
    kept = _KEPT
    for key in [k for k in kept if k[0] == url]:
        _close(kept.pop(key))


def _close(entry: tuple[float, Any, h5py.File]) -> None:
    """Close a kept file: its HDF5 handle, then its file object."""
    with contextlib.suppress(Exception):
        entry[2].close()
    with contextlib.suppress(Exception):
        entry[1].close()


def require(handle: h5py.File, key: str, path: Location, hint: str) -> h5py.Dataset:
    """The dataset ``key``, or a DataError listing what the file has and ``hint``."""
    if key not in handle:
        raise DataError(f"{path}: dataset '{key}' not found (found: {sorted(handle.keys())}); {hint}")
    return handle[key]
