"""The tile grid (pure): full coverage, alignment, clipped windows, halo, chunks, validation."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg_batch.geo.grid import TileGrid, Window, block_windows, intersection, round_up, union


@pytest.mark.parametrize("shape, tile", [((1001, 777), 64), ((130, 4099), 512), ((8, 8), 64), ((513, 512), 256)])
def test_every_pixel_in_exactly_one_tile(shape, tile):
    grid = TileGrid.for_model(shape, tile, receptive_radius=58, multiple=8)
    owners = np.zeros(shape, int)
    for t in grid.tiles():
        owners[t.core.slices()] += 1
    assert (owners == 1).all()
    assert [sum(c) for c in grid.chunks] == list(shape)
    assert grid.grid_shape == tuple(len(c) for c in grid.chunks)


def test_windows_are_aligned_clipped_and_hold_the_halo():
    grid = TileGrid.for_model((1001, 777), 64, receptive_radius=58, multiple=8)
    assert grid.halo == 64 and grid.padded_shape == (1008, 784)
    for t in grid.tiles():
        w = t.window
        assert w.row0 % 8 == 0 and w.col0 % 8 == 0 and w.row1 % 8 == 0 and w.col1 % 8 == 0
        assert 0 <= w.row0 and w.row1 <= 1008 and 0 <= w.col0 and w.col1 <= 784
        assert w.row0 == max(t.core.row0 - 64, 0) and w.col0 == max(t.core.col0 - 64, 0)
        assert w.row1 == min(round_up(t.core.row1, 8) + 64, 1008)
    last = grid.tile_at(*[n - 1 for n in grid.grid_shape])
    assert last.core == Window(960, 1001, 768, 777) and last.window == Window(896, 1008, 704, 784)


def test_window_geometry_helpers():
    outer, inner = Window(10, 50, 20, 80), Window(20, 30, 40, 45)
    assert inner.relative_to(outer) == Window(10, 20, 20, 25) and inner.shape == (10, 5)


def test_window_intersection_union_and_rasterio():
    a, b = Window(0, 10, 0, 20), Window(5, 15, 10, 30)
    assert a.intersection(b) == b.intersection(a) == Window(5, 10, 10, 20)
    assert a.union(b) == union(b, a) == Window(0, 15, 0, 30)
    assert intersection(a, b, Window(8, 9, 0, 100)) == Window(8, 9, 10, 20)
    assert a.intersection(Window(10, 12, 0, 20)) is None  # touching edges share no pixel
    assert a.intersection(Window(2, 4, 25, 30)) is None
    assert Window.of_shape((7, 9)) == Window(0, 7, 0, 9)
    rio = Window(5, 15, 10, 30).to_rasterio()
    assert (rio.col_off, rio.row_off, rio.width, rio.height) == (10, 5, 20, 10)
    assert Window(5, 15, 10, 30).slices() == (slice(5, 15), slice(10, 30))


def test_block_windows_cover_a_raster_once_with_ragged_edges():
    blocks = block_windows((10, 7), (4, 3))
    assert [index for index, _ in blocks] == [(r, c) for r in range(3) for c in range(3)]
    assert blocks[0][1] == Window(0, 4, 0, 3) and blocks[-1][1] == Window(8, 10, 6, 7)
    owners = np.zeros((10, 7), int)
    for _, window in blocks:
        owners[window.slices()] += 1
    assert (owners == 1).all()


def test_invalid_grids_say_how_to_fix():
    with pytest.raises(ValueError, match="tile size 100 is not a multiple of the model's size multiple 8.*use 104"):
        TileGrid((100, 100), tile=100, halo=8, multiple=8)
    with pytest.raises(ValueError, match="halo 5 is not a multiple of 8; use 8"):
        TileGrid((100, 100), tile=64, halo=5, multiple=8)
    assert TileGrid.for_model((10, 10), 64, receptive_radius=5, multiple=8).halo == 8
