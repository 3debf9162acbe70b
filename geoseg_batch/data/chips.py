"""A chip collection: one way to read chips from either on-disk layout, and the split.

A :class:`ChipCollection` is a list of *groups* (a shard file, or a run of
Landslide4Sense files) whose chips are read together; training streams groups in a
shuffled, interleaved order, statistics reduce over groups with Dask.

Every chip has an id (``image_N``, kept when packing), and its split (train / val / test)
is a pure function of that id and a seed, so a chip lands in the same split whether it
is read from the Landslide4Sense directory or from shards packed from it.

Shards may be read from object storage (a prefix, a shard's URL or a glob of them; see
:mod:`geoseg_batch.data.shards`); the collection then carries the store's
:class:`~geoseg_batch.io.remote.CloudSettings` (plain data, no secrets) to every reader, Dask
tasks and training ranks included.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg_batch.data import l4s, shards
from geoseg_batch.data.bands import default_band_names
from geoseg_batch.errors import DataError, MissingInputError
from geoseg_batch.io.urls import Location, is_url, location

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

SPLITS = ("train", "val", "test", "all")
L4S_GROUP_SIZE = 32


@dataclass(frozen=True)
class ChipGroup:
    """Chips read together: one shard file, or a run of Landslide4Sense pairs."""

    chip_ids: tuple[str, ...]
    shard: Location | None = None  # a shard file or URL
    pairs: tuple[l4s.L4SPair, ...] = ()


@dataclass(frozen=True)
class ChipCollection:
    """Validated chips from one path, in either layout."""

    path: Location  # what was opened: a directory, a file, a URL or a glob of URLs
    layout: str  # "shards" | "l4s"
    groups: tuple[ChipGroup, ...]
    band_names: tuple[str, ...]
    chip_shape: tuple[int, int]  # (rows, cols)
    fill_nan: float | None = None
    cloud: CloudSettings | None = None  # the object store's settings, when shards are read from one
    root: Location | None = None  # the folder (or prefix) of the shards: their stats.json

    @property
    def chips(self) -> int:
        return sum(len(g.chip_ids) for g in self.groups)

    @property
    def bands(self) -> int:
        return len(self.band_names)

    def files(self) -> list[Location]:
        """Every data file (or URL), for checksums."""
        if self.layout == "shards":
            return [g.shard for g in self.groups]
        return [f for g in self.groups for p in g.pairs for f in (p.image, p.mask)]


def open_chips(path: Location, fill_nan: float | None = None, cloud: CloudSettings | None = None) -> ChipCollection:
    """Open a Landslide4Sense directory or a shard directory/file (or shards in object storage, asked with
    ``cloud``: default the environment's settings), validating its structure."""
    path = location(path)
    if is_url(path):
        from geoseg_batch.io.remote import CloudSettings

        return _shard_collection(path, fill_nan, cloud or CloudSettings.of())
    if not path.exists():
        raise MissingInputError(
            f"{path}: no such file or directory; --data takes a Landslide4Sense directory (img/, mask/) "
            "or a directory of shards"
        )
    if shards.is_shard_path(path):
        return _shard_collection(path, fill_nan, None)
    if path.is_dir() and (l4s.is_l4s_dir(path) or not any(path.iterdir())):
        index = l4s.scan_l4s(path)
        pairs = index.pairs
        groups = tuple(
            ChipGroup(chip_ids=tuple(p.chip_id for p in pairs[i:i + L4S_GROUP_SIZE]), pairs=pairs[i:i + L4S_GROUP_SIZE])
            for i in range(0, len(pairs), L4S_GROUP_SIZE)
        )
        return ChipCollection(path, "l4s", groups, default_band_names(index.bands), index.chip_shape, fill_nan)
    raise DataError(
        f"{path}: neither a Landslide4Sense directory (img/image_N.h5, mask/mask_N.h5) "
        "nor a shard directory (shard_*.h5, index.json); point --data at one (`geoseg-batch shards pack` "
        "makes shards)"
    )


def _shard_collection(path: Location, fill_nan: float | None, cloud: CloudSettings | None) -> ChipCollection:
    """The collection of the shards at ``path`` (local, or in object storage with ``cloud``)."""
    shard_set = shards.open_shards(path, cloud)
    groups = tuple(ChipGroup(chip_ids=s.chip_ids, shard=s.path) for s in shard_set.shards)
    return ChipCollection(path, "shards", groups, shard_set.band_names, shard_set.chip_shape, fill_nan, cloud,
                          shard_set.root)


def absolute(collection: ChipCollection) -> ChipCollection:
    """``collection`` with every local path made absolute (for workers running in another directory)."""
    def resolved(value: Location | None) -> Location | None:
        """``value`` made absolute (a URL and None as they are)."""
        return value if value is None or is_url(value) else Path(value).resolve()

    groups = tuple(dataclasses.replace(g, shard=resolved(g.shard), pairs=tuple(
        dataclasses.replace(p, image=resolved(p.image), mask=resolved(p.mask)) for p in g.pairs))
        for g in collection.groups)
    return dataclasses.replace(collection, path=resolved(collection.path), groups=groups,
                               root=resolved(collection.root))


def read_group(collection: ChipCollection, group: ChipGroup, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (n, rows, cols, bands), masks uint8 (n, rows, cols)) of a group's chips at ``positions`` (ascending)."""
    if group.shard is not None:  # values were checked (or filled) when the shard was packed
        return shards.read_shard_chips(group.shard, positions, collection.cloud,
                                       shards.chunk_block(collection.chip_shape, collection.bands))
    if not len(positions):
        return _empty(collection)
    chips = [l4s.read_l4s_pair(group.pairs[int(i)], collection.fill_nan) for i in positions]
    return np.stack([c[0] for c in chips]), np.stack([c[1] for c in chips])


def _empty(collection: ChipCollection) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = collection.chip_shape
    return np.zeros((0, rows, cols, collection.bands), np.float32), np.zeros((0, rows, cols), np.uint8)


def iter_chips(collection: ChipCollection, split: str = "all", val_fraction: float = 0.0,
               test_fraction: float = 0.0, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (image, mask) of every chip in ``split``, group by group, in stored order."""
    for group in collection.groups:
        positions = split_positions(group.chip_ids, split, val_fraction, test_fraction, seed)
        images, masks = read_group(collection, group, positions)
        yield from zip(images, masks)


def split_of(chip_id: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """'train', 'val' or 'test' for a chip id: a stable hash of (seed, id) against the fractions."""
    digest = hashlib.blake2b(f"{seed}:{chip_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def split_positions(chip_ids: tuple[str, ...], split: str, val_fraction: float, test_fraction: float,
                    seed: int) -> np.ndarray:
    """Positions (within a group) of the chips that belong to ``split`` ('all' keeps every chip)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return np.arange(len(chip_ids))
    keep = [i for i, c in enumerate(chip_ids) if split_of(c, val_fraction, test_fraction, seed) == split]
    return np.asarray(keep, dtype=np.int64)


def count_split(collection: ChipCollection, split: str, val_fraction: float, test_fraction: float,
                seed: int) -> int:
    """Number of chips of the collection in ``split``."""
    return sum(len(split_positions(g.chip_ids, split, val_fraction, test_fraction, seed)) for g in collection.groups)
