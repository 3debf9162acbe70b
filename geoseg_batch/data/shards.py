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

This module reads and validates shards; :mod:`geoseg_batch.data.pack` writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg_batch.data.hdf5 import open_hdf5, require
from geoseg_batch.errors import DataError, MissingInputError

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
STATS_NAME = "stats.json"
SHARD_GLOB = "shard_*.h5"


@dataclass(frozen=True)
class ShardInfo:
    """One shard file and its chip ids."""

    path: Path
    chip_ids: tuple[str, ...]


@dataclass(frozen=True)
class ShardSet:
    """A validated set of shards (a shard directory, or a single shard file)."""

    root: Path
    shards: tuple[ShardInfo, ...]
    band_names: tuple[str, ...]
    chip_shape: tuple[int, int]  # (rows, cols)

    @property
    def chips(self) -> int:
        return sum(len(s.chip_ids) for s in self.shards)


def shard_name(number: int) -> str:
    """File name of shard ``number``."""
    return f"shard_{number:05d}.h5"


def is_shard_path(path: Path) -> bool:
    """True for a shard file or a directory holding shards (or their index)."""
    if path.is_file():
        return path.suffix == ".h5" and path.name.startswith("shard_")
    return path.is_dir() and ((path / INDEX_NAME).exists() or any(path.glob(SHARD_GLOB)))


def _read_header(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, int]]:
    """(chip ids, band names, chip shape) of one shard, validating its structure."""
    with open_hdf5(path) as handle:
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


def open_shards(path: Path | str) -> ShardSet:
    """Validate and open a shard directory or a single shard file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such shard file or directory")
    files = [path] if path.is_file() else sorted(path.glob(SHARD_GLOB))
    if not files:
        raise DataError(f"{path}: empty directory: no {SHARD_GLOB} files; create them with `geoseg-batch shards pack`")
    shards, bands, shape, first = [], None, None, None
    for file in files:
        chip_ids, file_bands, file_shape = _read_header(file)
        if bands is None:
            bands, shape, first = file_bands, file_shape, file
        elif (file_bands, file_shape) != (bands, shape):
            raise DataError(
                f"{file}: bands {list(file_bands)} and chip shape {file_shape} differ from "
                f"{first} ({list(bands)}, {shape}); every shard must hold the same bands and chip size"
            )
        shards.append(ShardInfo(file, chip_ids))
    root = path if path.is_dir() else path.parent
    return ShardSet(root=root, shards=tuple(shards), band_names=bands, chip_shape=shape)


def contiguous_runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """``positions`` (ascending) as (start, stop) slices of consecutive chips."""
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(np.asarray(positions), breaks)]


def read_shard_chips(path: Path | str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) of the chips at ``positions`` (ascending) in one shard.

    Reads one slice per run of consecutive positions straight into the result: h5py's
    list selections cost ~50x more per chip than a slice.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if np.any(np.diff(positions) <= 0):
        raise ValueError("shard positions must be strictly ascending")
    with open_hdf5(Path(path)) as handle:
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
        "shards": [{"path": s.path.name, "chips": len(s.chip_ids)} for s in shard_set.shards],
    }


def shard_summary(path: Path | str) -> dict[str, Any]:
    """What ``shards info`` prints: index, per-shard chip counts, compression, stats presence."""
    shard_set = open_shards(path)
    with open_hdf5(shard_set.shards[0].path) as handle:
        images = handle["images"]
        chunks, source = images.chunks, handle.attrs.get("source", "")
        compression = handle.attrs.get("compression", images.compression or "none")
    stats = shard_set.root / STATS_NAME
    return {
        **index_payload(shard_set, str(source)),
        "root": str(shard_set.root),
        "compression": compression,
        "chunks": list(chunks) if chunks else None,
        "bytes": sum(s.path.stat().st_size for s in shard_set.shards),
        "stats": str(stats) if stats.exists() else None,
    }
