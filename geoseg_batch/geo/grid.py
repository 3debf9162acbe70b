"""The tile grid: how a scene is cut into tiles for tiled inference (pure math, no Dask).

A scene of ``shape`` (rows, cols) is cut into *tiles* of ``tile`` x ``tile`` pixels whose
origins are multiples of ``tile``; the last row and column of tiles are ragged (smaller),
so every pixel belongs to exactly one tile. ``tile`` must be a multiple of the model's
*size multiple* m (2**depth), so pooling grids of all tiles line up with the whole scene's.

Each tile is predicted on its *window*: the tile grown by the *halo* on every side and
clipped to the *padded scene* (the scene zero-padded at the bottom and right to a multiple
of m). With the halo at least the model's receptive radius and rounded up to a multiple of
m, cropping the window's prediction back to the tile gives exactly what one whole-scene
forward pass gives ("exact" stitching): interior windows see all the context the pass sees,
and edge windows end where the padded scene ends, so 'same' padding pads every layer there
exactly as in the pass.

Types: shapes and offsets are (rows, cols); a :class:`Window` is half-open row and column
ranges in scene pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Window:
    """Half-open pixel ranges [row0, row1) x [col0, col1) of a raster.

    Like rasterio's ``windows.Window`` (which is (col_off, row_off, width, height) and may
    be fractional), but integral and by edges: a window is empty when either range is, and
    the operations that could make one (:meth:`intersection`) return None instead.
    """

    row0: int
    row1: int
    col0: int
    col1: int

    @classmethod
    def of_shape(cls, shape: tuple[int, int]) -> Window:
        """The whole of a raster of ``shape`` (rows, cols)."""
        return cls(0, shape[0], 0, shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the window."""
        return self.row1 - self.row0, self.col1 - self.col0

    def relative_to(self, outer: Window) -> Window:
        """This window in the coordinates of ``outer`` (which contains it)."""
        return Window(self.row0 - outer.row0, self.row1 - outer.row0, self.col0 - outer.col0, self.col1 - outer.col0)

    def slices(self) -> tuple[slice, slice]:
        """(row slice, col slice) selecting the window from a (rows, cols) array."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    def intersection(self, other: Window) -> Window | None:
        """The pixels in both windows; None when they share none (touching edges share none)."""
        return intersection(self, other)

    def union(self, other: Window) -> Window:
        """The smallest window holding both windows."""
        return union(self, other)

    def to_rasterio(self) -> Any:
        """This window as a ``rasterio.windows.Window`` (col_off, row_off, width, height)."""
        from rasterio.windows import Window as RasterioWindow

        return RasterioWindow(self.col0, self.row0, self.shape[1], self.shape[0])


def intersection(*windows: Window) -> Window | None:
    """The pixels in every one of ``windows``; None when they share none."""
    row0, row1 = max(w.row0 for w in windows), min(w.row1 for w in windows)
    col0, col1 = max(w.col0 for w in windows), min(w.col1 for w in windows)
    return Window(row0, row1, col0, col1) if row0 < row1 and col0 < col1 else None


def union(*windows: Window) -> Window:
    """The smallest window holding every one of ``windows``."""
    return Window(min(w.row0 for w in windows), max(w.row1 for w in windows),
                  min(w.col0 for w in windows), max(w.col1 for w in windows))


def block_windows(shape: tuple[int, int], block: tuple[int, int]) -> list[tuple[tuple[int, int], Window]]:
    """((block row, block col), window) of each block of ``block`` (rows, cols) pixels of a raster of
    ``shape``, row by row; blocks start at multiples of ``block``, the last row and column ragged."""
    (rows, cols), (block_rows, block_cols) = shape, block
    return [((r // block_rows, c // block_cols), Window(r, min(r + block_rows, rows), c, min(c + block_cols, cols)))
            for r in range(0, rows, block_rows) for c in range(0, cols, block_cols)]


@dataclass(frozen=True)
class Tile:
    """One tile: its index in the grid, the pixels it owns, and the window it is predicted on."""

    index: tuple[int, int]  # (tile row, tile col)
    core: Window  # pixels of the scene this tile outputs
    window: Window  # pixels read (core + halo, clipped to the padded scene)


@dataclass(frozen=True)
class TileGrid:
    """Tiles of a scene; see the module docstring."""

    shape: tuple[int, int]  # scene (rows, cols)
    tile: int
    halo: int
    multiple: int

    def __post_init__(self) -> None:
        if self.multiple < 1 or self.tile < 1 or self.halo < 0 or min(self.shape) < 1:
            raise ValueError(f"invalid grid: shape {self.shape}, tile {self.tile}, halo {self.halo}, "
                             f"multiple {self.multiple}")
        if self.tile % self.multiple:
            raise ValueError(
                f"tile size {self.tile} is not a multiple of the model's size multiple {self.multiple} "
                f"(2**depth); use {round_up(self.tile, self.multiple)}"
            )
        if self.halo % self.multiple:
            raise ValueError(f"halo {self.halo} is not a multiple of {self.multiple}; use {round_up(self.halo, self.multiple)}")

    @classmethod
    def for_model(cls, shape: tuple[int, int], tile: int, receptive_radius: int, multiple: int,
                  halo: int | None = None) -> TileGrid:
        """A grid whose halo is the receptive radius (or ``halo``) rounded up to the size multiple."""
        wanted = receptive_radius if halo is None else halo
        return cls(shape=shape, tile=tile, halo=round_up(wanted, multiple), multiple=multiple)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """The scene padded at the bottom and right to a multiple of the size multiple."""
        return round_up(self.shape[0], self.multiple), round_up(self.shape[1], self.multiple)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of tiles along (rows, cols)."""
        return math.ceil(self.shape[0] / self.tile), math.ceil(self.shape[1] / self.tile)

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask chunks of the scene on this grid (ragged last chunk)."""
        return tuple(
            tuple(min(self.tile, size - start) for start in range(0, size, self.tile)) for size in self.shape
        )

    def tile_at(self, row: int, col: int) -> Tile:
        """Tile (row, col) of the grid."""
        rows, cols = self.shape
        padded_rows, padded_cols = self.padded_shape
        r0, c0 = row * self.tile, col * self.tile
        r1, c1 = min(r0 + self.tile, rows), min(c0 + self.tile, cols)
        window = Window(
            max(r0 - self.halo, 0), min(round_up(r1, self.multiple) + self.halo, padded_rows),
            max(c0 - self.halo, 0), min(round_up(c1, self.multiple) + self.halo, padded_cols),
        )
        return Tile(index=(row, col), core=Window(r0, r1, c0, c1), window=window)

    def tiles(self) -> list[Tile]:
        """Every tile, row by row."""
        grid_rows, grid_cols = self.grid_shape
        return [self.tile_at(r, c) for r in range(grid_rows) for c in range(grid_cols)]

    def computed_pixels(self) -> int:
        """Pixels the model computes over all windows (for overlap accounting), without listing the tiles: a
        window's rows depend on its tile row only, its columns on its tile column, so the sum is a product."""
        return self._window_span(0) * self._window_span(1)

    def _window_span(self, axis: int) -> int:
        """The summed length along ``axis`` (0: rows, 1: cols) of the windows of one line of tiles."""
        size, padded = self.shape[axis], self.padded_shape[axis]
        return sum(min(round_up(min(start + self.tile, size), self.multiple) + self.halo, padded)
                   - max(start - self.halo, 0) for start in range(0, size, self.tile))
