"""The target grid of a mosaic, and the pixel geometry of north-up rasters (pure; no Dask).

A :class:`MosaicGrid` is a CRS, a north-up affine transform and a shape (rows, cols), cut
into square *chunks* of ``chunk`` pixels whose origins are multiples of ``chunk`` (the last
row and column ragged). It is an odc-geo ``GeoBox`` (:attr:`MosaicGrid.geobox`) cut by a
``GeoboxTiles`` (:attr:`MosaicGrid.geobox_tiles`): chunk windows, chunk transforms, the
number of chunks and the chunks under a pixel box are theirs.

Two steps stay in this module's own arithmetic, because odc-geo's differ in the last bits
and in which chunks a box touches (measured on 24 000 boxes against the arithmetic here,
which earlier mosaics were built with, so it cannot change without changing them):

- *box to pixels* (:func:`pixel_window`): ``(x - left) / xres`` per edge, floor and ceil.
  ``GeoboxTiles.tiles`` on a box in CRS coordinates maps it through the inverse affine
  (``x * (1 / xres) - left / xres``), whose last bit moves edges on the pixel lattice (a
  store on the mosaic's lattice, the common case) across pixel boundaries, and it counts
  chunks that only touch the box; 163 of 12 000 lattice-aligned boxes got other chunks.
- *snapping* (:func:`snapped`): a coordinate goes onto the lattice ``origin + k * step`` of
  a store, and one already on it (within :data:`SNAP_TOLERANCE` pixels) is kept bit for
  bit; ``GeoBox.from_bbox`` snaps to a lattice through zero (``anchor``), which rounds a
  store's own origin.

Bounds are (left, bottom, right, top); transforms here never rotate (stores and grids are
checked), so they are handled term by term.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from affine import Affine

from geoseg_batch.errors import ConfigError
from geoseg_batch.geo.grid import Window

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
    grown = Window(math.floor(rows[0]) - margin, math.ceil(rows[1]) + margin,
                   math.floor(cols[0]) - margin, math.ceil(cols[1]) + margin)
    return grown.intersection(Window.of_shape(shape))


def snapped(value: float, origin: float, step: float) -> float:
    """``value`` moved against ``step``'s direction onto the lattice ``origin + k * step``.

    A value already on the lattice (within SNAP_TOLERANCE pixels) is returned unchanged, so
    a store's own origin is kept bit for bit.
    """
    offset = (value - origin) / step
    if abs(offset - round(offset)) < SNAP_TOLERANCE:
        return value
    return origin + math.floor(offset) * step


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

    @functools.cached_property
    def geobox(self) -> Any:
        """The grid as an odc-geo ``GeoBox`` (shape, affine, CRS)."""
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, self.transform, self.crs)

    @functools.cached_property
    def geobox_tiles(self) -> Any:
        """The chunks as an odc-geo ``GeoboxTiles`` of :attr:`geobox`."""
        from odc.geo.geobox import GeoboxTiles

        return GeoboxTiles(self.geobox, (self.chunk, self.chunk))

    def __getstate__(self) -> dict[str, Any]:
        """The fields only: the odc-geo objects are rebuilt where they are needed."""
        return {name: getattr(self, name) for name in ("crs", "transform", "shape", "chunk")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the fields (a frozen dataclass: set through ``object.__setattr__``)."""
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y), positive, in CRS units."""
        return self.transform.a, -self.transform.e

    @property
    def bounds(self) -> Bounds:
        """(left, bottom, right, top) of the whole grid."""
        return corner_bounds(self.transform, self.shape)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of chunks along (rows, cols)."""
        return tuple(self.geobox_tiles.shape.yx)

    def chunk_indices(self) -> list[ChunkIndex]:
        """Every chunk index, row by row."""
        rows, cols = self.grid_shape
        return [(row, col) for row in range(rows) for col in range(cols)]

    def chunk_window(self, index: ChunkIndex) -> Window:
        """Pixels of the grid in chunk ``index``."""
        rows, cols = self.geobox_tiles.roi[index]
        return Window(rows.start, rows.stop, cols.start, cols.stop)

    def chunk_transform(self, index: ChunkIndex) -> Affine:
        """Transform of chunk ``index`` as a raster of its own.

        The same bits as ``geobox_tiles[index].affine`` (measured), without the PendingDeprecationWarning
        that odc-geo's ``Affine * Affine`` raises in affine 3 on every chunk.
        """
        return window_transform(self.transform, self.chunk_window(index))

    def chunk_bounds(self, index: ChunkIndex) -> Bounds:
        """(left, bottom, right, top) of chunk ``index``."""
        return corner_bounds(self.chunk_transform(index), self.chunk_window(index).shape)

    def chunks_within(self, bounds: Bounds) -> list[ChunkIndex]:
        """Indices of the chunks sharing an area with ``bounds`` (in the grid's CRS), row by row."""
        from odc.geo.geom import BoundingBox

        if not overlaps(bounds, self.bounds):
            return []
        window = pixel_window(bounds, self.transform, self.shape)
        if window is None:
            return []
        # A pixel box (no CRS): the chunks it covers, its exclusive end not pulling in the next chunk.
        return sorted(self.geobox_tiles.tiles(BoundingBox(window.col0, window.row0, window.col1, window.row1)))


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
