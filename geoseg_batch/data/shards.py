"""Packed HDF5 shards: many chips per file, one chip per HDF5 chunk.

A shard directory holds ``shard_NNNNN.h5`` files, ``index.json`` (the shard list with chip
counts, band names, chip shape) and ``stats.json`` (per-band statistics, see
:mod:`geoseg_batch.data.stats`). Each shard file has

    images    (chips, rows, cols, bands) float32, chunks (1, rows, cols, bands), compressed
    masks     (chips, rows, cols) uint8,           chunks (1, rows, cols),        compressed
    chip_ids  (chips,) strings: the source chip names (``image_N``), which fix the split
    attrs     format_version, band_names (JSON list), source, compression

The default codec is Blosc (LZ4 with byte shuffle, through ``hdf5plugin``): float imagery
barely compresses (gzip saves ~20%) but gzip costs ~4 ms of CPU per 128x128x14 chip, time
a 2-core machine takes from the training step; Blosc decodes the same chip in ~0.3 ms at
about gzip's size. Other readers need ``import hdf5plugin`` before opening the files.

Shards may live in object storage: a prefix (``s3://bucket/shards``, read like a shard
directory), one shard's URL, or a glob of them (``s3://bucket/shards/shard_000*.h5``), expanded
through fsspec. They are read through fsspec file objects whose block cache is sized to a
chip's chunk (:func:`chunk_block`), a range at a time, never downloaded whole.

This module reads and validates shards; :mod:`geoseg_batch.data.pack` writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.data.hdf5 import block_size, open_hdf5, require
from geoseg_batch.errors import DataError, MissingInputError
from geoseg_batch.io.urls import Location, is_url, location, name

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
STATS_NAME = "stats.json"
SHARD_GLOB = "shard_*.h5"


@dataclass(frozen=True)
class ShardInfo:
    """One shard file and its chip ids."""

    path: Location
    chip_ids: tuple[str, ...]


@dataclass(frozen=True)
class ShardSet:
    """A validated set of shards (a shard directory, or a single shard file)."""

    root: Location  # the directory (or prefix) holding the shards, their index and stats
    shards: tuple[ShardInfo, ...]
    band_names: tuple[str, ...]
    chip_shape: tuple[int, int]  # (rows, cols)

    @property
    def chips(self) -> int:
        return sum(len(s.chip_ids) for s in self.shards)


def shard_name(number: int) -> str:
    """File name of shard ``number``."""
    return f"shard_{number:05d}.h5"


def is_shard_path(path: Location) -> bool:
    """True for a shard file or a directory holding shards (or their index); any URL is taken for shards (the
    only layout read from object storage)."""
    if is_url(path):
        return True
    path = Path(path)
    if path.is_file():
        return path.suffix == ".h5" and path.name.startswith("shard_")
    return path.is_dir() and ((path / INDEX_NAME).exists() or any(path.glob(SHARD_GLOB)))


def _read_header(path: Location, cloud: CloudSettings | None) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, int]]:
    """(chip ids, band names, chip shape) of one shard, validating its structure."""
    with open_hdf5(path, cloud) as handle:
        for key in ("images", "masks", "chip_ids"):
            require(handle, key, path, "not a geoseg shard: repack it with `geoseg-batch shards pack`")
        version = int(handle.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise DataError(
                f"{path}: shard format_version {version}; expected {FORMAT_VERSION}: "
                "repack it with `geoseg-batch shards pack`"
            )
        images, masks = handle["images"].shape, handle["masks"].shape
        if len(images) != 4 or masks != images[:3]:
            raise DataError(
                f"{path}: images {images} and masks {masks} do not line up; "
                "expected (chips, rows, cols, bands) and (chips, rows, cols)"
            )
        chip_ids = tuple(handle["chip_ids"].asstr()[()])
        bands = tuple(json.loads(handle.attrs["band_names"]))
        if len(bands) != images[3]:
            raise DataError(f"{path}: {len(bands)} band names for {images[3]} bands")
        return chip_ids, bands, (int(images[1]), int(images[2]))


def open_shards(path: Location, cloud: CloudSettings | None = None) -> ShardSet:
    """Validate and open a shard directory or a single shard file (local, or a prefix, URL or glob of URLs in
    object storage, asked with ``cloud``)."""
    path = location(path)
    files, root = remote_shards(path, cloud) if is_url(path) else _local_files(path)
    shards, bands, shape, first = [], None, None, None
    for file in files:
        chip_ids, file_bands, file_shape = _read_header(file, cloud)
        if bands is None:
            bands, shape, first = file_bands, file_shape, file
        elif (file_bands, file_shape) != (bands, shape):
            raise DataError(
                f"{file}: bands {list(file_bands)} and chip shape {file_shape} differ from "
                f"{first} ({list(bands)}, {shape}); every shard must hold the same bands and chip size"
            )
        shards.append(ShardInfo(file, chip_ids))
    return ShardSet(root=root, shards=tuple(shards), band_names=bands, chip_shape=shape)


def _local_files(path: Path) -> tuple[list[Path], Path]:
    """(shard files, root) of a local shard directory or file."""
    if not path.exists():
        raise MissingInputError(f"{path}: no such shard file or directory")
    files = [path] if path.is_file() else sorted(path.glob(SHARD_GLOB))
    if not files:
        raise DataError(f"{path}: empty directory: no {SHARD_GLOB} files; create them with `geoseg-batch shards pack`")
    return files, path if path.is_dir() else path.parent


def remote_shards(url: str, cloud: CloudSettings | None) -> tuple[list[str], str]:
    """(shard URLs, root prefix) of a prefix, a shard's URL or a glob of shard URLs in object storage, listed
    (no shard read); MissingInputError when there are none, the store's one-line errors otherwise."""
    from geoseg_batch.io.remote import CloudSettings, expand, object_info

    cloud = cloud or CloudSettings.of()
    if any(c in url for c in "*?["):
        files, root = expand(url, cloud), url.rsplit("/", 1)[0]
        if not files:
            raise MissingInputError(f"{url}: no object matches; name shards packed by `geoseg-batch shards pack`")
    elif url.endswith(".h5"):
        object_info(url, cloud)  # a missing key, bucket or refused credentials: one line
        files, root = [url], url.rsplit("/", 1)[0]
    else:
        root = url.rstrip("/")
        files = expand(f"{root}/{SHARD_GLOB}", cloud)
        if not files:
            raise MissingInputError(f"{url}: no {SHARD_GLOB} objects under this prefix; upload a shard directory "
                                    "(`geoseg-batch shards pack` makes one: Landslide4Sense chips are read from "
                                    "local directories only) or name a shard or a glob of shards")
    return files, root


def beside(root: Location, name: str) -> Location:
    """The file ``name`` in the shard directory (or prefix) ``root``: its index or its stats."""
    return f"{str(root).rstrip('/')}/{name}" if is_url(root) else Path(root) / name


def chunk_block(chip_shape: tuple[int, int], bands: int, chips: int = 8) -> int:
    """The block of object storage reads of shards of ``bands``-band chips of ``chip_shape``: the chunks of
    ``chips`` consecutive chips (a read block of the training pipeline), fetched in one request."""
    return block_size(chips * chip_shape[0] * chip_shape[1] * bands * np.dtype(np.float32).itemsize)


def contiguous_runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """``positions`` (ascending) as (start, stop) slices of consecutive chips."""
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(np.asarray(positions), breaks)]


def read_shard_chips(path: Location, positions: np.ndarray, cloud: CloudSettings | None = None,
                     block: int = 2**20) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) of the chips at ``positions`` (ascending) in one shard.

    Reads one slice per run of consecutive positions straight into the result: h5py's
    list selections cost ~50x more per chip than a slice. A shard in object storage is read
    with ``cloud``'s settings in blocks of ``block`` bytes (:func:`chunk_block`).
    """
    positions = np.asarray(positions, dtype=np.int64)
    if np.any(np.diff(positions) <= 0):
        raise ValueError("shard positions must be strictly ascending")
    with open_hdf5(location(path), cloud, block, keep=True) as handle:
        images_ds, masks_ds = handle["images"], handle["masks"]
        images = np.empty((len(positions),) + images_ds.shape[1:], np.float32)
        masks = np.empty((len(positions),) + masks_ds.shape[1:], np.uint8)
        filled = 0
        for start, stop in contiguous_runs(positions):
            count = stop - start
            images_ds.read_direct(images, np.s_[start:stop], np.s_[filled:filled + count])
            masks_ds.read_direct(masks, np.s_[start:stop], np.s_[filled:filled + count])
            filled += count
    return images, masks


def index_payload(shard_set: ShardSet, source: str) -> dict[str, Any]:
    """The ``index.json`` content of a shard set."""
    return {
        "format_version": FORMAT_VERSION,
        "source": source,
        "band_names": list(shard_set.band_names),
        "chip_shape": list(shard_set.chip_shape),
        "chips": shard_set.chips,
        "shards": [{"path": name(s.path), "chips": len(s.chip_ids)} for s in shard_set.shards],
    }


def shard_summary(path: Location, cloud: CloudSettings | None = None) -> dict[str, Any]:
    """What ``shards info`` prints: index, per-shard chip counts, compression, stats presence."""
    shard_set = open_shards(path, cloud)
    with open_hdf5(shard_set.shards[0].path, cloud) as handle:
        images = handle["images"]
        chunks, source = images.chunks, handle.attrs.get("source", "")
        compression = handle.attrs.get("compression", images.compression or "none")
    stats = beside(shard_set.root, STATS_NAME)
    return {
        **index_payload(shard_set, str(source)),
        "root": str(shard_set.root),
        "compression": compression,
        "chunks": list(chunks) if chunks else None,
        "bytes": sum(_size(s.path, cloud) for s in shard_set.shards),
        "stats": str(stats) if _size(stats, cloud) is not None else None,
    }


def _size(path: Location, cloud: CloudSettings | None) -> int | None:
    """Bytes of the file or object at ``path``, None when there is none."""
    if not is_url(path):
        return Path(path).stat().st_size if Path(path).exists() else None
    from geoseg_batch.io.remote import CloudSettings, object_info

    try:
        return int(object_info(str(path), cloud or CloudSettings.of())["size"])
    except MissingInputError:
        return None
