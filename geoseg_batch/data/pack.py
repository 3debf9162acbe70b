"""Packing chips into HDF5 shards (see :mod:`geoseg_batch.data.shards` for the format).

The source (a Landslide4Sense directory, or shards to repack) is validated from its headers
first; then one Dask task writes each shard, reading its chips and checking their values,
and band statistics are computed over the new shards. Everything is written into a staging
directory that is renamed to OUT at the end: on any error nothing is left at OUT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from geoseg_batch.data import shards
from geoseg_batch.data.chips import ChipCollection, open_chips, read_group
from geoseg_batch.data.stats import compute_stats
from geoseg_batch.errors import ConfigError
from geoseg_batch.io.publish import staged_directory, write_json

COMPRESSIONS = ("blosc", "gzip", "lzf", "none")


@dataclass(frozen=True)
class PackResult:
    """Where the shards went and how many."""

    out: Path
    shards: int
    chips: int
    stats: Path
    index: Path


def shard_plan(collection: ChipCollection, chips_per_shard: int) -> list[list[tuple[int, int]]]:
    """Chips (group number, position) of each shard: consecutive runs of ``chips_per_shard``."""
    order = [(g, i) for g, group in enumerate(collection.groups) for i in range(len(group.chip_ids))]
    return [order[i:i + chips_per_shard] for i in range(0, len(order), chips_per_shard)]


def write_shard(path: Path, collection: ChipCollection, members: list[tuple[int, int]], compression: str) -> int:
    """Write one shard file with the chips ``members``; returns its chip count."""
    rows, cols = collection.chip_shape
    options: dict[str, Any] = {}
    if compression == "blosc":
        options = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    elif compression == "gzip":
        options = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    elif compression == "lzf":
        options = {"compression": "lzf", "shuffle": True}
    with h5py.File(path, "w") as handle:
        handle.attrs["format_version"] = shards.FORMAT_VERSION
        handle.attrs["band_names"] = json.dumps(list(collection.band_names))
        handle.attrs["source"] = str(collection.path)
        handle.attrs["compression"] = compression
        images = handle.create_dataset("images", (len(members), rows, cols, collection.bands), np.float32,
                                       chunks=(1, rows, cols, collection.bands), **options)
        masks = handle.create_dataset("masks", (len(members), rows, cols), np.uint8, chunks=(1, rows, cols), **options)
        chip_ids = []
        for start in range(0, len(members), 16):  # bounded memory: 16 chips in flight
            block = members[start:start + 16]
            for offset, (g, i) in enumerate(block):
                group = collection.groups[g]
                image, mask = read_group(collection, group, np.asarray([i]))
                images[start + offset] = image[0]
                masks[start + offset] = mask[0]
                chip_ids.append(group.chip_ids[i])
        handle.create_dataset("chip_ids", data=np.asarray(chip_ids, dtype=h5py.string_dtype()))
    return len(members)


def pack_shards(
    src: Path | str,
    out: Path | str,
    chips_per_shard: int = 256,
    fill_nan: float | None = None,
    compression: str = "blosc",
    overwrite: bool = False,
    client: Any | None = None,
) -> PackResult:
    """Validate ``src`` and pack its chips into shards at ``out`` (atomically), with index and stats."""
    if chips_per_shard < 1:
        raise ConfigError(f"--chips-per-shard must be >= 1, got {chips_per_shard}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"--compression must be one of {COMPRESSIONS}, got {compression!r}")
    import dask

    collection = open_chips(src, fill_nan=fill_nan)
    plan = shard_plan(collection, chips_per_shard)
    with staged_directory(out, overwrite=overwrite) as stage:
        tasks = [dask.delayed(write_shard)(stage / shards.shard_name(n), collection, members, compression)
                 for n, members in enumerate(plan)]
        if client is not None:
            client.compute(tasks, sync=True)
        else:
            dask.compute(*tasks, scheduler="threads")
        packed = open_chips(stage)
        stats = compute_stats(packed, client=client)
        write_json(stage / shards.STATS_NAME, stats.to_dict())
        write_json(stage / shards.INDEX_NAME, shards.index_payload(shards.open_shards(stage), str(collection.path)))
    out = Path(out)
    return PackResult(out, len(plan), collection.chips, out / shards.STATS_NAME, out / shards.INDEX_NAME)
