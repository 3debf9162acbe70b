"""Mosaics: many scenes' predictions put onto one target grid, chunk by chunk, on Dask.

A *mosaic* is one store holding the predictions of many scenes (the ``<stem>.zarr`` stores
that ``predict`` writes, here called *sources*) on one *target grid*. The grid
(:class:`MosaicGrid`, like odc-geo's GeoBox) is a CRS, a north-up affine transform and a
shape (rows, cols), cut into square *chunks* of ``chunk`` pixels whose origins are
multiples of ``chunk`` (the last row and column ragged). A chunk is one zarr chunk of the
mosaic store and one Dask task.

A source's *footprint* is its bounds transformed to the grid's CRS. The task of a chunk
visits, in the given order, the sources whose footprint meets the chunk; for each it reads
only the source window under the chunk (plus a margin of :data:`SOURCE_MARGIN` pixels) and
maps every chunk pixel to the source pixel nearest its centre with
``rasterio.warp.reproject`` (nearest neighbour, so values stay exactly the sources'
values). The sources' *layers* (probabilities, mask and edge weight per chunk pixel) are
then merged pixel by pixel by one of :data:`MERGE_RULES`, and the task writes the chunk.
No task holds more than one chunk's layers and one source window at a time.

Merge rules (pure NumPy: :func:`merge_first`, :func:`merge_max`, :func:`merge_mean`):

- ``first``: the first source (in order) with data at a pixel gives its probabilities and mask.
- ``max``: the source most confident at a pixel gives them; confidence is ``max(p, 1 - p)``
  of the positive class (binary) or the largest class probability; ties go to the first.
- ``mean``: probabilities are averaged, each source weighted by the distance of its pixel to
  the source raster's edge (in source pixels, plus one), so seams feather; the mask is
  recomputed from the mean (binary: ``p >= threshold``; multi-class: argmax).

The mosaic store has exactly the layout of a scene store (it is made by ``create_store``):
same variables, encodings, fill values and georeferencing, so ``write_cog``, rioxarray and
GDAL read it the same way. All sources must come from one model and one encoding: same
classes, threshold and probability dtype (uint8 0..250 or float32); the mosaic keeps it.

Nearest-neighbour sampling goes through GDAL's warper, whose approximate transformer places
a pixel within 0.125 source pixels; so a mosaic does not depend on which chunks are
computed (an incremental update equals a rebuild), but may differ by a few pixels from one
with another chunk size when CRSs differ.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geoseg_batch.errors import ConfigError, DataError, MissingInputError
from geoseg_batch.geo.grid import TileGrid, Window
from geoseg_batch.runtime import worker_address
from geoseg_batch.io.zarr_store import (
    MASK_NODATA, PROBABILITY_NODATA_UINT8, PROBABILITY_SCALE, class_mask, create_store, encoded_probabilities,
)

log = logging.getLogger(__name__)

MERGE_RULES = ("max", "first", "mean")
# Source pixels read beyond a chunk's footprint: covers GDAL's approximate transformer
# (0.125 px) and the densified footprint's curvature error.
SOURCE_MARGIN = 2
# Lattice tolerance, in pixels: coordinates this close to a pixel edge are on it.
SNAP_TOLERANCE = 1e-6

Bounds = tuple[float, float, float, float]  # left, bottom, right, top
ChunkIndex = tuple[int, int]  # (chunk row, chunk col)


def crs_string(crs: Any) -> str:
    """``crs`` (EPSG string, WKT, rasterio CRS) as ``"EPSG:n"`` where it has a code, else WKT."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(crs).to_string()
    except CRSError as error:
        raise ConfigError(f"crs {crs!r} is not a CRS ({error}); expected an EPSG code such as 'EPSG:32633' "
                          f"or WKT") from error


@functools.lru_cache(maxsize=256)
def same_crs(a: str, b: str) -> bool:
    """Whether two CRS strings name the same CRS (cached: tasks ask it per chunk and source)."""
    from rasterio.crs import CRS

    return a == b or CRS.from_user_input(a) == CRS.from_user_input(b)


# Transforms here never rotate (stores and grids are checked), so they are handled term by
# term: no dependence on affine's operators, which changed meaning across versions.
def corner_bounds(transform: Affine, shape: tuple[int, int]) -> Bounds:
    """Bounds of a raster of ``shape`` (rows, cols) on ``transform`` (north-up or not)."""
    rows, cols = shape
    xs = (transform.c, transform.c + transform.a * cols)
    ys = (transform.f, transform.f + transform.e * rows)
    return min(xs), min(ys), max(xs), max(ys)


def window_transform(transform: Affine, window: Window) -> Affine:
    """The transform of ``window`` of a raster on ``transform``."""
    return Affine(transform.a, 0.0, transform.c + transform.a * window.col0,
                  0.0, transform.e, transform.f + transform.e * window.row0)


def overlaps(a: Bounds, b: Bounds) -> bool:
    """Whether two bounds share an area (touching edges do not)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def pixel_window(bounds: Bounds, transform: Affine, shape: tuple[int, int], margin: int = 0) -> Window | None:
    """The pixels of a raster (``transform``, ``shape``) under ``bounds``, grown by ``margin`` and
    clipped to the raster; None when that is empty."""
    left, bottom, right, top = bounds
    cols = sorted(((left - transform.c) / transform.a, (right - transform.c) / transform.a))
    rows = sorted(((top - transform.f) / transform.e, (bottom - transform.f) / transform.e))
    row0, row1 = max(math.floor(rows[0]) - margin, 0), min(math.ceil(rows[1]) + margin, shape[0])
    col0, col1 = max(math.floor(cols[0]) - margin, 0), min(math.ceil(cols[1]) + margin, shape[1])
    return Window(row0, row1, col0, col1) if row0 < row1 and col0 < col1 else None


@dataclass(frozen=True)
class MosaicGrid:
    """The target grid of a mosaic; see the module docstring.

    ``crs``: ``"EPSG:n"`` or WKT (normalized on creation, so equal grids compare equal);
    ``transform``: north-up, mapping (col, row) pixel corners to CRS coordinates;
    ``shape``: (rows, cols); ``chunk``: chunk size in pixels.
    """

    crs: str
    transform: Affine
    shape: tuple[int, int]
    chunk: int = 512

    def __post_init__(self) -> None:
        t = self.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise ConfigError(f"mosaic grid transform {tuple(t)[:6]} is not north-up; expected "
                              f"(xres, 0, left, 0, -yres, top) with xres, yres > 0")
        if len(self.shape) != 2 or min(self.shape) < 1 or self.chunk < 1:
            raise ConfigError(f"mosaic grid shape {self.shape} / chunk {self.chunk} invalid; expected "
                              f"(rows, cols) >= 1 and chunk >= 1")
        object.__setattr__(self, "crs", crs_string(self.crs))
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y), positive, in CRS units."""
        return self.transform.a, -self.transform.e

    @property
    def bounds(self) -> Bounds:
        """(left, bottom, right, top) of the whole grid."""
        return corner_bounds(self.transform, self.shape)

    @property
    def tiles(self) -> TileGrid:
        """The chunks as a tile grid without halo (ragged last row and column)."""
        return TileGrid(self.shape, self.chunk, halo=0, multiple=1)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of chunks along (rows, cols)."""
        return self.tiles.grid_shape

    def chunk_indices(self) -> list[ChunkIndex]:
        """Every chunk index, row by row."""
        rows, cols = self.grid_shape
        return [(row, col) for row in range(rows) for col in range(cols)]

    def chunk_window(self, index: ChunkIndex) -> Window:
        """Pixels of the grid in chunk ``index``."""
        return self.tiles.tile_at(*index).core

    def chunk_transform(self, index: ChunkIndex) -> Affine:
        """Transform of chunk ``index`` as a raster of its own."""
        return window_transform(self.transform, self.chunk_window(index))

    def chunk_bounds(self, index: ChunkIndex) -> Bounds:
        """(left, bottom, right, top) of chunk ``index``."""
        return corner_bounds(self.chunk_transform(index), self.chunk_window(index).shape)

    def chunks_within(self, bounds: Bounds) -> list[ChunkIndex]:
        """Indices of the chunks sharing an area with ``bounds`` (in the grid's CRS)."""
        if not overlaps(bounds, self.bounds):
            return []
        window = pixel_window(bounds, self.transform, self.shape)
        if window is None:
            return []
        # A pixel window ends on the pixel after the bounds' edge: an edge on a chunk
        # boundary must not pull in the next chunk, hence the exclusive end - 1.
        rows = range(window.row0 // self.chunk, (window.row1 - 1) // self.chunk + 1)
        cols = range(window.col0 // self.chunk, (window.col1 - 1) // self.chunk + 1)
        return [(row, col) for row in rows for col in cols]


def grid_differences(received: MosaicGrid, expected: MosaicGrid) -> list[str]:
    """What differs between two grids, one phrase each (empty when they are the same grid)."""
    differences = []
    if not same_crs(received.crs, expected.crs):
        differences.append(f"crs {received.crs} instead of {expected.crs}")
    if not received.transform.almost_equals(expected.transform, precision=1e-9 * min(expected.resolution)):
        differences.append(f"transform {tuple(received.transform)[:6]} instead of {tuple(expected.transform)[:6]}")
    if received.shape != expected.shape:
        differences.append(f"shape {received.shape} instead of {expected.shape}")
    if received.chunk != expected.chunk:
        differences.append(f"chunk {received.chunk} instead of {expected.chunk}")
    return differences


@dataclass(frozen=True)
class SourceStore:
    """A prediction store (a scene's, or a mosaic's) as read for mosaicking; picklable."""

    path: str
    crs: str
    transform: Affine
    shape: tuple[int, int]  # (rows, cols)
    chunk: int
    classes: tuple[str, ...]
    threshold: float | None  # None: a store written before the threshold was recorded
    probability_dtype: str  # "uint8" (0..250, 255 nodata) or "float32" (NaN nodata)

    @property
    def bands(self) -> int:
        """Probability bands: the positive class alone when binary, else one per class."""
        return 1 if len(self.classes) == 2 else len(self.classes)

    @property
    def bounds(self) -> Bounds:
        return corner_bounds(self.transform, self.shape)

    @property
    def grid(self) -> MosaicGrid:
        """The store's own grid (its chunks are its tiles)."""
        return MosaicGrid(self.crs, self.transform, self.shape, self.chunk)

    def footprint(self, crs: str) -> Bounds:
        """Bounds in ``crs`` (edges densified, so curved edges stay inside)."""
        from rasterio.warp import transform_bounds

        if same_crs(self.crs, crs):
            return self.bounds
        bounds = transform_bounds(self.crs, crs, *self.bounds, densify_pts=21)
        if not all(math.isfinite(v) for v in bounds):
            raise DataError(f"{self.path}: its bounds {self.bounds} in {self.crs} have no place in {crs}; mosaic it "
                            f"onto a grid in a CRS that covers it")
        return bounds


def read_source(path: Path | str) -> SourceStore:
    """The store at ``path`` (written by ``predict`` or :func:`build_mosaic`), validated."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    import zarr

    path = Path(path)
    expected = "expected a <stem>.zarr store written by `geoseg-batch predict`"
    if not path.exists():
        raise MissingInputError(f"{path}: prediction store not found; {expected}")
    try:
        # Format 3 stores are written without consolidated metadata: do not look for it (and warn).
        version = zarr.open_group(str(path), mode="r").metadata.zarr_format
        dataset = xr.open_zarr(path, mask_and_scale=False, consolidated=None if version == 2 else False)
    except Exception as error:  # zarr and xarray raise several types for "not a store"
        raise DataError(f"{path}: not a zarr store ({error}); {expected}") from error
    missing = sorted({"mask", "probabilities"} - set(dataset.data_vars))
    if missing:
        raise DataError(f"{path}: variables {missing} missing (has {sorted(dataset.data_vars)}); {expected}")
    crs = dataset.rio.crs
    classes = tuple(dataset["mask"].attrs.get("classes", ()))
    if crs is None or len(classes) < 2:
        raise DataError(f"{path}: no CRS or no class names (mask attribute 'classes': {list(classes)}); {expected}")
    transform = dataset.rio.transform()
    if transform.b != 0 or transform.d != 0:
        raise DataError(f"{path}: rotated transform {tuple(transform)[:6]}; expected one without rotation")
    return SourceStore(
        path=str(path), crs=crs_string(crs), transform=transform, shape=tuple(dataset["mask"].shape),
        chunk=int(dataset["mask"].encoding["chunks"][0]), classes=classes,
        threshold=dataset["mask"].attrs.get("threshold"), probability_dtype=dataset["probabilities"].dtype.name,
    )


def check_same_model(received: SourceStore, expected: SourceStore) -> None:
    """Raise unless ``received`` holds predictions of the same classes, threshold and encoding."""
    for name in ("classes", "threshold", "probability_dtype"):
        got, want = getattr(received, name), getattr(expected, name)
        if got != want:
            raise DataError(
                f"{received.path}: {name} {got!r}, expected {want!r} as in {expected.path}; a mosaic merges the "
                f"predictions of one model in one encoding: mosaic these stores separately, or re-run predict "
                f"with the same model and float_output"
            )


def read_sources(stores: Sequence[Path | str]) -> list[SourceStore]:
    """The stores, read and checked to hold predictions of one model in one encoding."""
    if not stores:
        raise ConfigError("no prediction stores given; expected at least one <stem>.zarr from `geoseg-batch predict`")
    sources = [read_source(path) for path in stores]
    for source in sources[1:]:
        check_same_model(source, sources[0])
    return sources


def store_grid(path: Path | str) -> MosaicGrid:
    """The grid of an existing store (e.g. a mosaic to update in place)."""
    return read_source(path).grid


def finest_resolution(sources: Sequence[SourceStore], crs: str) -> tuple[float, float]:
    """The smallest pixel size (x, y) among the sources, in ``crs`` units.

    A source in another CRS counts with GDAL's suggested pixel size for it in ``crs`` (the
    one that keeps its pixel count along the diagonal).
    """
    from rasterio.warp import calculate_default_transform

    sizes = []
    for source in sources:
        if same_crs(source.crs, crs):
            sizes.append((abs(source.transform.a), abs(source.transform.e)))
        else:
            transform, _, _ = calculate_default_transform(source.crs, crs, source.shape[1], source.shape[0],
                                                          *source.bounds)
            sizes.append((abs(transform.a), abs(transform.e)))
    return min(x for x, _ in sizes), min(y for _, y in sizes)


def snapped(value: float, origin: float, step: float) -> float:
    """``value`` moved against ``step``'s direction onto the lattice ``origin + k * step``.

    A value already on the lattice (within SNAP_TOLERANCE pixels) is returned unchanged, so
    a store's own origin is kept bit for bit.
    """
    offset = (value - origin) / step
    if abs(offset - round(offset)) < SNAP_TOLERANCE:
        return value
    return origin + math.floor(offset) * step


def grid_for(sources: Sequence[SourceStore], crs: str | None = None, resolution: float | None = None,
             bounds: Bounds | None = None, chunk: int = 512) -> MosaicGrid:
    """The grid of :func:`mosaic_grid`, for sources already read."""
    if resolution is not None and not resolution > 0:
        raise ConfigError(f"resolution {resolution} is not positive; expected a pixel size in the target CRS units")
    if bounds is not None and not (bounds[0] < bounds[2] and bounds[1] < bounds[3]):
        raise ConfigError(f"bounds {bounds} are empty; expected (left, bottom, right, top) with left < right, "
                          f"bottom < top")
    target = crs_string(crs) if crs is not None else sources[0].crs
    xres, yres = (resolution, resolution) if resolution is not None else finest_resolution(sources, target)
    if bounds is not None:
        left, bottom, right, top = bounds
    else:
        footprints = [source.footprint(target) for source in sources]
        left, bottom = min(f[0] for f in footprints), min(f[1] for f in footprints)
        right, top = max(f[2] for f in footprints), max(f[3] for f in footprints)
        # Put the grid on the pixel lattice of the first source that is on the target CRS and
        # resolution, so sources sharing one grid give exactly that grid.
        anchor = next((s.transform for s in sources if same_crs(s.crs, target)
                       and math.isclose(s.transform.a, xres, rel_tol=1e-9)
                       and math.isclose(-s.transform.e, yres, rel_tol=1e-9)), None)
        if anchor is not None:
            left, top = snapped(left, anchor.c, xres), snapped(top, anchor.f, -yres)
    shape = (math.ceil((top - bottom) / yres - SNAP_TOLERANCE), math.ceil((right - left) / xres - SNAP_TOLERANCE))
    return MosaicGrid(target, Affine(xres, 0.0, left, 0.0, -yres, top), shape, chunk)


def mosaic_grid(stores: Sequence[Path], crs: str | None = None, resolution: float | None = None,
                bounds: Bounds | None = None, chunk: int = 512) -> MosaicGrid:
    """A target grid for mosaicking ``stores``; what is not given is derived from them.

    ``crs``: default the first store's. ``resolution`` (square pixels, target CRS units):
    default the finest store's, per axis (see :func:`finest_resolution`). ``bounds``
    (left, bottom, right, top in the target CRS): default the union of the stores'
    footprints, its top-left corner moved outward onto the pixel lattice of the first store
    already on that CRS and resolution; stores all on one common grid thus give exactly that
    grid. The grid covers ``bounds`` (its right and bottom edges rounded outward to whole pixels).
    """
    return grid_for(read_sources(stores), crs, resolution, bounds, chunk)


def chunk_source_window(source: SourceStore, grid: MosaicGrid, index: ChunkIndex) -> Window | None:
    """The window of ``source`` to read for chunk ``index`` (with margin); None when it misses the chunk."""
    from rasterio.warp import transform_bounds

    bounds = grid.chunk_bounds(index)
    if not same_crs(source.crs, grid.crs):
        bounds = transform_bounds(grid.crs, source.crs, *bounds, densify_pts=21)
        if not all(math.isfinite(v) for v in bounds):  # the chunk lies outside the source CRS's domain
            return None
    if not overlaps(bounds, source.bounds):
        return None
    return pixel_window(bounds, source.transform, source.shape, SOURCE_MARGIN)


def touched_chunks(grid: MosaicGrid, sources: Sequence[SourceStore]) -> list[ChunkIndex]:
    """:func:`chunks_touched` for sources already read."""
    touched: set[ChunkIndex] = set()
    for source in sources:
        for index in grid.chunks_within(source.footprint(grid.crs)):
            # The footprint is a box around a possibly slanted outline: check each chunk in
            # the source's own CRS too.
            if index not in touched and chunk_source_window(source, grid, index) is not None:
                touched.add(index)
    return sorted(touched)


def chunks_touched(grid: MosaicGrid, stores: Sequence[Path]) -> list[ChunkIndex]:
    """Indices of the chunks of ``grid`` that any of ``stores`` covers (conservatively: by bounds)."""
    return touched_chunks(grid, read_sources(stores))


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


def edge_distance(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance (in pixels, plus one) of pixels (rows, cols) to the edge of a raster of ``shape``."""
    return np.minimum.reduce([rows, cols, shape[0] - 1 - rows, shape[1] - 1 - cols]).astype(np.float32) + 1


def probability_nodata(dtype: np.dtype | str) -> float:
    """The probabilities' nodata value in a store of this dtype."""
    return PROBABILITY_NODATA_UINT8 if np.dtype(dtype) == np.uint8 else np.nan


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
    group = zarr.open_group(source.path, mode="r")
    mask = np.full(picks.shape, MASK_NODATA, np.uint8)
    mask[reached] = group["mask"].oindex[needed_rows, needed_cols][at_row, at_col]
    probabilities = np.full((source.bands, *picks.shape), probability_nodata(source.probability_dtype),
                            source.probability_dtype)
    probabilities[:, reached] = group["probabilities"].oindex[:, needed_rows, needed_cols][:, at_row, at_col]
    weight = np.zeros(picks.shape, np.float32)
    weight[reached] = edge_distance(rows, cols, source.shape)
    return Layer(probabilities, mask, weight)


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """(n, rows, cols): how sure each layer of (n, bands, rows, cols) probabilities is, in their encoding.

    Binary (one band, the positive class): max(p, 1 - p); multi-class: the largest class
    probability. uint8 stays in integer steps, so equal confidences tie exactly.
    """
    full = PROBABILITY_SCALE if probabilities.dtype == np.uint8 else 1.0
    values = probabilities.astype(np.float32)
    if values.shape[1] == 1:
        return np.maximum(values[:, 0], full - values[:, 0])
    return values.max(axis=1)


def chosen_layer(score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(rows, cols): the first layer with the highest ``score`` among the valid ones; -1 where none is."""
    if valid.shape[0] == 0:
        return np.full(valid.shape[1:], -1)
    return np.where(valid.any(axis=0), np.where(valid, score, -np.inf).argmax(axis=0), -1)


def picked(probabilities: np.ndarray, masks: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (bands, rows, cols) and mask (rows, cols) of layer ``chosen`` at each pixel (nodata at -1)."""
    out = np.full(probabilities.shape[1:], probability_nodata(probabilities.dtype), probabilities.dtype)
    mask = np.full(masks.shape[1:], MASK_NODATA, np.uint8)
    for layer in range(probabilities.shape[0]):
        here = chosen == layer
        out[:, here] = probabilities[layer][:, here]
        mask[here] = masks[layer][here]
    return out, mask


def merge_first(probabilities: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule ``first`` over layers (n, bands, rows, cols) and masks (n, rows, cols): (probabilities, mask)."""
    valid = masks != MASK_NODATA
    return picked(probabilities, masks, chosen_layer(np.zeros(valid.shape), valid))


def merge_max(probabilities: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule ``max`` (see :func:`confidence`) over layers; returns (probabilities, mask)."""
    return picked(probabilities, masks, chosen_layer(confidence(probabilities), masks != MASK_NODATA))


def merge_mean(probabilities: np.ndarray, masks: np.ndarray, weights: np.ndarray,
               threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Rule ``mean``: weighted mean of the valid layers' probabilities, mask recomputed from it.

    ``threshold`` (the positive-class threshold) is needed for binary probabilities only.
    The result is encoded like the input (uint8 0..250 or float32).
    """
    binary = probabilities.shape[1] == 1
    if binary and threshold is None:
        raise ValueError("merge_mean of binary probabilities needs the threshold")
    valid = masks != MASK_NODATA
    weights = np.where(valid, weights, 0.0)
    full = PROBABILITY_SCALE if probabilities.dtype == np.uint8 else 1.0
    values = np.where(valid[:, None], probabilities, 0).astype(np.float64) / full
    total = weights.sum(axis=0)
    covered = total > 0
    mean = np.moveaxis((values * weights[:, None]).sum(axis=0) / np.where(covered, total, 1.0), 0, -1)
    float_output = probabilities.dtype != np.uint8
    return (encoded_probabilities(mean, covered, binary, float_output),
            class_mask(mean, covered, threshold if binary else 0.0, binary))  # multi-class: argmax, no threshold


def merge_layers(rule: str, probabilities: np.ndarray, masks: np.ndarray, weights: np.ndarray,
                 threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge layers (n, bands, rows, cols) by ``rule`` (one of MERGE_RULES): (probabilities, mask)."""
    if rule == "first":
        return merge_first(probabilities, masks)
    if rule == "max":
        return merge_max(probabilities, masks)
    if rule == "mean":
        return merge_mean(probabilities, masks, weights, threshold)
    raise ConfigError(f"merge rule {rule!r} unknown; expected one of {', '.join(MERGE_RULES)}")


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
                 zarr_format: int) -> ChunkRecord:
    """Build chunk ``index`` of the mosaic at ``out`` from ``sources`` and write it (a Dask task)."""
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
    group = zarr.open_group(out, mode="r+", zarr_format=zarr_format)
    rows, cols = window.slices()
    group["mask"][rows, cols] = mask
    group["probabilities"][:, rows, cols] = probabilities
    return ChunkRecord(index, len(layers), mask.size, int((mask != MASK_NODATA).sum()))


@dataclass(frozen=True)
class MosaicSummary:
    """What :func:`build_mosaic` did."""

    zarr: Path
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


def create_mosaic_store(path: Path, grid: MosaicGrid, like: SourceStore, zarr_format: int = 2) -> None:
    """An all-nodata store on ``grid`` with the classes, threshold and encoding of ``like``."""
    import dask.array as da
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from rioxarray.rioxarray import affine_to_coords

    rows, cols = grid.shape
    # create_store reads only the template's sizes, coordinates and georeferencing.
    template = xr.DataArray(da.zeros(grid.shape, np.uint8, chunks=grid.chunk), dims=("y", "x"),
                            coords=affine_to_coords(grid.transform, cols, rows))
    template = template.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    create_store(path, template, grid.chunk, like.classes, like.threshold,
                 float_output=like.probability_dtype == "float32", zarr_format=zarr_format)


def check_existing_mosaic(path: Path, grid: MosaicGrid, like: SourceStore, zarr_format: int) -> None:
    """Raise unless the store at ``path`` can take chunks of this mosaic."""
    import zarr

    existing = read_source(path)
    differences = grid_differences(existing.grid, grid)
    if differences:
        raise DataError(f"{path}: the existing mosaic store is on another grid ({'; '.join(differences)}); "
                        f"write to a new path, delete it, or pass grid=store_grid({str(path)!r}) to update it")
    check_same_model(existing, like)
    found = zarr.open_group(str(path), mode="r").metadata.zarr_format
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


def build_mosaic(stores: Sequence[Path], out_zarr: Path, grid: MosaicGrid, merge: str = "max", *,
                 chunks: Collection[ChunkIndex] | None = None, zarr_format: int = 2,
                 client: Any | None = None) -> MosaicSummary:
    """Mosaic ``stores`` (in order: it matters to ``first`` and to ties) onto ``grid`` at ``out_zarr``.

    The store at ``out_zarr`` is created all nodata if it does not exist, else checked to be
    on ``grid`` with the sources' classes and encoding (an update). Only ``chunks`` are
    computed (default: every chunk a store touches), each from all ``stores``; others keep
    what they hold. One Dask task per chunk, on ``client`` if given (retried twice on
    worker loss), else on Dask's threaded scheduler.
    """
    import dask
    from dask.base import tokenize

    started = time.perf_counter()
    if merge not in MERGE_RULES:
        raise ConfigError(f"merge rule {merge!r} unknown; expected one of {', '.join(MERGE_RULES)}")
    if zarr_format not in (2, 3):
        raise ConfigError(f"zarr_format {zarr_format} unsupported; expected 2 (GDAL-readable) or 3")
    sources = read_sources(stores)
    first = sources[0]
    if merge == "mean" and first.bands == 1 and first.threshold is None:
        raise DataError(f"{first.path}: no 'threshold' attribute on mask (written by an older predict), which merge "
                        f"'mean' needs to recompute the mask; re-run predict or use merge 'max' or 'first'")
    wanted = touched_chunks(grid, sources) if chunks is None else checked_chunks(grid, chunks)
    out_zarr = Path(out_zarr)
    if out_zarr.exists():
        check_existing_mosaic(out_zarr, grid, first, zarr_format)
    else:
        create_mosaic_store(out_zarr, grid, first, zarr_format)
    token = tokenize(str(out_zarr), grid, merge, [s.path for s in sources])
    tasks = [dask.delayed(mosaic_chunk, pure=True)(index, sources, grid, merge, str(out_zarr), zarr_format,
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
