"""Prediction stores read for mosaicking, and how they fall on a target grid.

A *source* is a prediction store (the ``<stem>.zarr`` that ``predict`` writes, or a
mosaic's) read as a :class:`SourceStore`: its path, georeferencing, chunking and what model
wrote it. All sources of one mosaic must come from one model and one encoding (same
classes, threshold and probability dtype: :func:`check_same_model`).

A source's *footprint* is its bounds transformed to the grid's CRS (edges densified, so
curved edges stay inside). The chunks a source *touches* are those its footprint meets and
whose window in the source (:func:`chunk_source_window`, grown by :data:`SOURCE_MARGIN`
pixels) is not empty. :func:`mosaic_grid` derives a target grid from the sources (CRS,
resolution, bounds: what is not given), on odc-geo's ``GeoBox.from_bbox``.

A store may be in object storage (``s3://bucket/.../scene.zarr``): it is read through fsspec
with the :class:`~geoseg_batch.io.remote.CloudSettings` it was named with, which the
:class:`SourceStore` keeps (plain data), so the chunk tasks that read it on the workers do too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affine import Affine

from geoseg_batch.errors import ConfigError, DataError, MissingInputError
from geoseg_batch.geo.grid import Window
from geoseg_batch.geo.target_grid import (
    SNAP_TOLERANCE, Bounds, ChunkIndex, MosaicGrid, corner_bounds, crs_string, overlaps, pixel_window, same_crs,
    snapped,
)
from geoseg_batch.io.urls import is_url
from geoseg_batch.io.zarr_store import store_exists, zarr_storage_options

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

# Source pixels read beyond a chunk's footprint: covers GDAL's approximate transformer
# (0.125 px) and the densified footprint's curvature error.
SOURCE_MARGIN = 2


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
    cloud: CloudSettings | None = None  # object storage settings, for a URL path (plain data: tasks carry it)

    def storage_options(self) -> dict[str, Any] | None:
        """What zarr opens the store with: fsspec's storage options for a URL; None for a local path."""
        return zarr_storage_options(self.path, self.cloud)

    @property
    def bands(self) -> int:
        """Probability bands: the positive class alone when binary, else one per class."""
        return 1 if len(self.classes) == 2 else len(self.classes)

    @property
    def bounds(self) -> Bounds:
        """(left, bottom, right, top) in the store's CRS."""
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


def read_source(path: Path | str, cloud: CloudSettings | None = None) -> SourceStore:
    """The store at ``path`` (written by ``predict`` or :func:`build_mosaic`; a local path or a URL, read with
    ``cloud``), validated."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    import zarr

    path = str(path)
    cloud = cloud if is_url(path) else None
    expected = "expected a <stem>.zarr store written by `geoseg-batch predict`"
    if not store_exists(path, cloud):
        raise MissingInputError(f"{path}: prediction store not found; {expected}")
    options = zarr_storage_options(path, cloud)
    try:
        # Format 3 stores are written without consolidated metadata: do not look for it (and warn).
        version = zarr.open_group(path, mode="r", storage_options=options).metadata.zarr_format
        dataset = xr.open_zarr(path, mask_and_scale=False, consolidated=None if version == 2 else False,
                               storage_options=options)
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
        path=path, crs=crs_string(crs), transform=transform, shape=tuple(dataset["mask"].shape),
        chunk=int(dataset["mask"].encoding["chunks"][0]), classes=classes,
        threshold=dataset["mask"].attrs.get("threshold"), probability_dtype=dataset["probabilities"].dtype.name,
        cloud=cloud,
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


def read_sources(stores: Sequence[Path | str], cloud: CloudSettings | None = None) -> list[SourceStore]:
    """The stores (URLs read with ``cloud``), read and checked to hold predictions of one model in one encoding."""
    if not stores:
        raise ConfigError("no prediction stores given; expected at least one <stem>.zarr from `geoseg-batch predict`")
    sources = [read_source(path, cloud) for path in stores]
    for source in sources[1:]:
        check_same_model(source, sources[0])
    return sources


def store_grid(path: Path | str, cloud: CloudSettings | None = None) -> MosaicGrid:
    """The grid of an existing store (e.g. a mosaic to update in place; a URL read with ``cloud``)."""
    return read_source(path, cloud).grid


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


def grid_for(sources: Sequence[SourceStore], crs: str | None = None, resolution: float | None = None,
             bounds: Bounds | None = None, chunk: int = 512) -> MosaicGrid:
    """The grid of :func:`mosaic_grid`, for sources already read."""
    from odc.geo import resxy_
    from odc.geo.geobox import GeoBox

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
    # Tight: left and top as they are; right and bottom rounded outward to whole pixels, less
    # SNAP_TOLERANCE (measured: the same shapes as ceil(span / res - SNAP_TOLERANCE) on 20 000 boxes).
    with warnings.catch_warnings():  # odc-geo multiplies Affines with `*`, which affine 3 marks as deprecated
        warnings.filterwarnings("ignore", "Use `@` matmul", PendingDeprecationWarning)
        geobox = GeoBox.from_bbox((left, bottom, right, top), target, resolution=resxy_(xres, -yres), tight=True,
                                  tol=SNAP_TOLERANCE)
    return MosaicGrid(target, geobox.affine, tuple(geobox.shape), chunk)


def mosaic_grid(stores: Sequence[Path | str], crs: str | None = None, resolution: float | None = None,
                bounds: Bounds | None = None, chunk: int = 512, cloud: CloudSettings | None = None) -> MosaicGrid:
    """A target grid for mosaicking ``stores``; what is not given is derived from them.

    ``crs``: default the first store's. ``resolution`` (square pixels, target CRS units):
    default the finest store's, per axis (see :func:`finest_resolution`). ``bounds``
    (left, bottom, right, top in the target CRS): default the union of the stores'
    footprints, its top-left corner moved outward onto the pixel lattice of the first store
    already on that CRS and resolution; stores all on one common grid thus give exactly that
    grid. The grid covers ``bounds`` (its right and bottom edges rounded outward to whole pixels).
    Stores in object storage are read with ``cloud``.
    """
    return grid_for(read_sources(stores, cloud), crs, resolution, bounds, chunk)


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


def chunks_touched(grid: MosaicGrid, stores: Sequence[Path | str], cloud: CloudSettings | None = None
                   ) -> list[ChunkIndex]:
    """Indices of the chunks of ``grid`` that any of ``stores`` (URLs read with ``cloud``) covers (conservatively:
    by bounds)."""
    return touched_chunks(grid, read_sources(stores, cloud))


