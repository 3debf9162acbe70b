"""Mosaics on Dask: many scenes' predictions put onto one target grid, one task per chunk.

A *mosaic* is one store holding the predictions of many scenes (the ``<stem>.zarr`` stores
that ``predict`` writes, here called *sources*: :mod:`geoseg_batch.geo.sources`) on one
target grid (:class:`~geoseg_batch.geo.target_grid.MosaicGrid`, an odc-geo GeoBox cut into
chunks). A chunk is one zarr chunk of the mosaic store and one Dask task.

The task of a chunk visits, in the given order, the sources whose footprint meets the chunk;
for each it reads only the source window under the chunk (plus a margin of
:data:`~geoseg_batch.geo.sources.SOURCE_MARGIN` pixels) and maps every chunk pixel to the
source pixel nearest its centre with ``rasterio.warp.reproject`` (nearest neighbour, so
values stay exactly the sources' values). The sources' *layers* (probabilities, mask and
edge weight per chunk pixel) are then merged pixel by pixel by one of :data:`MERGE_RULES`
(pure NumPy, :mod:`geoseg_batch.geo.merge`), and the task writes the chunk. No task holds
more than one chunk's layers and one source window at a time.

The mosaic store has exactly the layout of a scene store (it is made by ``create_store`` on
the grid's GeoBox): same variables, encodings, fill values and georeferencing, so
``write_cog``, rioxarray and GDAL read it the same way. All sources must come from one model
and one encoding: same classes, threshold and probability dtype (uint8 0..250 or float32);
the mosaic keeps it.

Nearest-neighbour sampling goes through GDAL's warper, whose approximate transformer places
a pixel within 0.125 source pixels; so a mosaic does not depend on which chunks are
computed (an incremental update equals a rebuild), but may differ by a few pixels from one
with another chunk size when CRSs differ.

The grid is :mod:`geoseg_batch.geo.target_grid`'s, the stores :mod:`geoseg_batch.geo.sources`'
and the merge rules :mod:`geoseg_batch.geo.merge`'s; this module is only the Dask layer over them.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.errors import ConfigError, DataError
from geoseg_batch.geo.grid import Window
from geoseg_batch.geo.merge import MERGE_RULES, edge_distance, merge_layers, probability_nodata
from geoseg_batch.geo.sources import (
    SourceStore, check_same_model, chunk_source_window, read_source, read_sources, touched_chunks,
)
from geoseg_batch.geo.target_grid import ChunkIndex, MosaicGrid, grid_differences, window_transform
from geoseg_batch.io.urls import is_url
from geoseg_batch.io.zarr_store import MASK_NODATA, create_store, store_exists, zarr_storage_options
from geoseg_batch.runtime import worker_address

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

__all__ = [
    "ChunkRecord", "Layer", "MosaicSummary", "build_mosaic", "check_existing_mosaic", "checked_chunks", "chunk_layers",
    "create_mosaic_store", "mosaic_chunk", "nearest_source_pixels", "read_layer",
]

log = logging.getLogger(__name__)


def nearest_source_pixels(source: SourceStore, window: Window, grid: MosaicGrid, index: ChunkIndex) -> np.ndarray:
    """For each pixel of chunk ``index``: the flat index (row * cols + col) in ``window`` of the
    source pixel nearest its centre, -1 where the source does not reach.

    The indices are warped instead of the data so that one reprojection serves every
    variable and they all pick the same source pixel.
    """
    from rasterio.warp import Resampling, reproject

    rows, cols = window.shape
    if rows * cols >= 2**31:
        raise ConfigError(f"chunk {index} covers {rows}x{cols} pixels of {source.path}; use a smaller chunk or a "
                          f"finer resolution")
    picks = np.full(grid.chunk_window(index).shape, -1, np.int32)
    reproject(np.arange(rows * cols, dtype=np.int32).reshape(rows, cols), picks,
              src_transform=window_transform(source.transform, window), src_crs=source.crs,
              dst_transform=grid.chunk_transform(index), dst_crs=grid.crs, dst_nodata=-1,
              resampling=Resampling.nearest)
    return picks


@dataclass(frozen=True)
class Layer:
    """One source resampled onto one chunk."""

    probabilities: np.ndarray  # (bands, rows, cols), the source's encoding and nodata
    mask: np.ndarray  # (rows, cols) uint8, MASK_NODATA where the source has no data
    weight: np.ndarray  # (rows, cols) float32: edge distance of the source pixel, 0 where none


def read_layer(source: SourceStore, window: Window, picks: np.ndarray) -> Layer | None:
    """``source`` sampled at ``picks`` (see :func:`nearest_source_pixels`); None when none is reached."""
    import zarr

    reached = picks >= 0
    if not reached.any():
        return None
    rows, cols = np.divmod(picks[reached], window.shape[1])
    rows, cols = rows + window.row0, cols + window.col0
    # Read only the rows and columns sampled: a coarser mosaic skips most of the window.
    needed_rows, at_row = np.unique(rows, return_inverse=True)
    needed_cols, at_col = np.unique(cols, return_inverse=True)
    group = zarr.open_group(source.path, mode="r", storage_options=source.storage_options())
    mask = np.full(picks.shape, MASK_NODATA, np.uint8)
    mask[reached] = group["mask"].oindex[needed_rows, needed_cols][at_row, at_col]
    probabilities = np.full((source.bands, *picks.shape), probability_nodata(source.probability_dtype),
                            source.probability_dtype)
    probabilities[:, reached] = group["probabilities"].oindex[:, needed_rows, needed_cols][:, at_row, at_col]
    weight = np.zeros(picks.shape, np.float32)
    weight[reached] = edge_distance(rows, cols, source.shape)
    return Layer(probabilities, mask, weight)


@dataclass(frozen=True)
class ChunkRecord:
    """What one chunk task did (small: this is all a task returns)."""

    index: ChunkIndex
    sources: int  # sources that reached the chunk
    pixels: int
    valid_pixels: int  # pixels with data after merging
    worker: str = field(default_factory=worker_address)  # who wrote the chunk


def chunk_layers(sources: Sequence[SourceStore], grid: MosaicGrid, index: ChunkIndex) -> list[Layer]:
    """The layers of the sources (in order) that reach chunk ``index``."""
    layers = []
    for source in sources:
        window = chunk_source_window(source, grid, index)
        if window is not None:
            layer = read_layer(source, window, nearest_source_pixels(source, window, grid, index))
            if layer is not None:
                layers.append(layer)
    return layers


def mosaic_chunk(index: ChunkIndex, sources: Sequence[SourceStore], grid: MosaicGrid, merge: str, out: str,
                 zarr_format: int, cloud: CloudSettings | None = None) -> ChunkRecord:
    """Build chunk ``index`` of the mosaic at ``out`` (a URL: written with ``cloud``) from ``sources`` and write
    it (a Dask task); what it did."""
    import zarr

    window = grid.chunk_window(index)
    layers = chunk_layers(sources, grid, index)
    like = sources[0]
    if layers:
        probabilities, mask = merge_layers(merge, np.stack([layer.probabilities for layer in layers]),
                                           np.stack([layer.mask for layer in layers]),
                                           np.stack([layer.weight for layer in layers]), like.threshold)
    else:  # still written: an update must clear what the chunk held
        probabilities = np.full((like.bands, *window.shape), probability_nodata(like.probability_dtype),
                                like.probability_dtype)
        mask = np.full(window.shape, MASK_NODATA, np.uint8)
    group = zarr.open_group(out, mode="r+", zarr_format=zarr_format, storage_options=zarr_storage_options(out, cloud))
    rows, cols = window.slices()
    group["mask"][rows, cols] = mask
    group["probabilities"][:, rows, cols] = probabilities
    return ChunkRecord(index, len(layers), mask.size, int((mask != MASK_NODATA).sum()))


@dataclass(frozen=True)
class MosaicSummary:
    """What :func:`build_mosaic` did."""

    zarr: Path | str  # a local path, or a URL
    grid: MosaicGrid
    merge: str
    stores: tuple[str, ...]
    chunks_total: int  # chunks of the grid
    chunks_written: tuple[ChunkIndex, ...]  # computed and written by this call, sorted
    megapixels: float  # pixels of the chunks written, millions
    valid_megapixels: float  # of which with data
    wall_s: float
    chunks_per_worker: dict[str, int] = field(default_factory=dict)  # Dask worker address -> chunks written

    def as_summary(self) -> dict[str, Any]:
        """The run-manifest ``summary`` fields (DESIGN.md: tiles are chunks here)."""
        return {
            "stores": len(self.stores), "merge": self.merge, "crs": self.grid.crs, "shape": list(self.grid.shape),
            "chunk": self.grid.chunk, "megapixels": round(self.megapixels, 3),
            "valid_megapixels": round(self.valid_megapixels, 3), "tiles_total": self.chunks_total,
            "tiles_computed": len(self.chunks_written), "wall_s": round(self.wall_s, 3),
            "mpx_per_s": round(self.megapixels / max(self.wall_s, 1e-9), 4),
        }


def create_mosaic_store(path: Path | str, grid: MosaicGrid, like: SourceStore, zarr_format: int = 2,
                        cloud: CloudSettings | None = None) -> None:
    """An all-nodata store on ``grid`` with the classes, threshold and encoding of ``like`` (a URL: written with
    ``cloud``)."""
    create_store(path, grid.geobox, grid.chunk, like.classes, like.threshold,
                 float_output=like.probability_dtype == "float32", zarr_format=zarr_format, cloud=cloud)


def check_existing_mosaic(path: Path | str, grid: MosaicGrid, like: SourceStore, zarr_format: int,
                          cloud: CloudSettings | None = None) -> None:
    """Raise unless the store at ``path`` (a URL: read with ``cloud``) can take chunks of this mosaic."""
    import zarr

    existing = read_source(path, cloud)
    differences = grid_differences(existing.grid, grid)
    if differences:
        raise DataError(f"{path}: the existing mosaic store is on another grid ({'; '.join(differences)}); "
                        f"write to a new path, delete it, or pass grid=store_grid({str(path)!r}) to update it")
    check_same_model(existing, like)
    found = zarr.open_group(str(path), mode="r", storage_options=existing.storage_options()).metadata.zarr_format
    if found != zarr_format:
        raise ConfigError(f"{path}: the existing mosaic store is zarr format {found}, zarr_format={zarr_format} "
                          f"was asked; pass zarr_format={found} or write to a new path")


def checked_chunks(grid: MosaicGrid, chunks: Collection[ChunkIndex]) -> list[ChunkIndex]:
    """``chunks`` sorted and deduplicated, each checked to be a chunk of ``grid``."""
    rows, cols = grid.grid_shape
    wanted = sorted({(int(r), int(c)) for r, c in chunks})
    outside = [index for index in wanted if not (0 <= index[0] < rows and 0 <= index[1] < cols)]
    if outside:
        raise ConfigError(f"chunks {outside[:5]} are outside the grid's {rows}x{cols} chunks; expected indices "
                          f"from grid.chunk_indices() or chunks_touched()")
    return wanted


def build_mosaic(stores: Sequence[Path | str], out_zarr: Path | str, grid: MosaicGrid, merge: str = "max", *,
                 chunks: Collection[ChunkIndex] | None = None, zarr_format: int = 2,
                 client: Any | None = None, cloud: CloudSettings | None = None) -> MosaicSummary:
    """Mosaic ``stores`` (in order: it matters to ``first`` and to ties) onto ``grid`` at ``out_zarr``.

    The store at ``out_zarr`` is created all nodata if it does not exist, else checked to be
    on ``grid`` with the sources' classes and encoding (an update). Only ``chunks`` are
    computed (default: every chunk a store touches), each from all ``stores``; others keep
    what they hold. One Dask task per chunk, on ``client`` if given (retried twice on
    worker loss), else on Dask's threaded scheduler. Stores and ``out_zarr`` may be URLs (``s3://...``), read
    and written with ``cloud`` (which the tasks carry); returns what was done.
    """
    import dask
    from dask.base import tokenize

    started = time.perf_counter()
    if merge not in MERGE_RULES:
        raise ConfigError(f"merge rule {merge!r} unknown; expected one of {', '.join(MERGE_RULES)}")
    if zarr_format not in (2, 3):
        raise ConfigError(f"zarr_format {zarr_format} unsupported; expected 2 (GDAL-readable) or 3")
    sources = read_sources(stores, cloud)
    first = sources[0]
    if merge == "mean" and first.bands == 1 and first.threshold is None:
        raise DataError(f"{first.path}: no 'threshold' attribute on mask (written by an older predict), which merge "
                        f"'mean' needs to recompute the mask; re-run predict or use merge 'max' or 'first'")
    wanted = touched_chunks(grid, sources) if chunks is None else checked_chunks(grid, chunks)
    out_zarr = out_zarr if is_url(str(out_zarr)) else Path(out_zarr)
    cloud = cloud if is_url(str(out_zarr)) else None
    if store_exists(out_zarr, cloud):
        check_existing_mosaic(out_zarr, grid, first, zarr_format, cloud)
    else:
        create_mosaic_store(out_zarr, grid, first, zarr_format, cloud)
    token = tokenize(str(out_zarr), grid, merge, [s.path for s in sources])
    tasks = [dask.delayed(mosaic_chunk, pure=True)(index, sources, grid, merge, str(out_zarr), zarr_format, cloud,
                                                   dask_key_name=f"mosaic-{token}-{index[0]}-{index[1]}")
             for index in wanted]
    log.info("mosaic: %d stores, %d of %d chunks (%s merge) -> %s", len(sources), len(tasks),
             math.prod(grid.grid_shape), merge, out_zarr)
    if client is None:
        records = list(dask.compute(*tasks, scheduler="threads"))
    else:
        records = client.gather(client.compute(tasks, retries=2))
    return MosaicSummary(
        zarr=out_zarr, grid=grid, merge=merge, stores=tuple(s.path for s in sources),
        chunks_total=math.prod(grid.grid_shape), chunks_written=tuple(r.index for r in records),
        megapixels=sum(r.pixels for r in records) / 1e6, valid_megapixels=sum(r.valid_pixels for r in records) / 1e6,
        wall_s=time.perf_counter() - started, chunks_per_worker=dict(collections.Counter(r.worker for r in records)),
    )
