"""The mosaic's target grid (pure): an odc-geo GeoBox cut into chunks, pixel boxes, snapping."""

from __future__ import annotations

import pickle
import warnings

import pytest
from affine import Affine

from geoseg_batch.geo.grid import Window
from geoseg_batch.geo.target_grid import MosaicGrid, corner_bounds, pixel_window, snapped


def _grid(chunk: int = 64) -> MosaicGrid:
    return MosaicGrid("EPSG:32633", Affine(10, 0, 500000, 0, -10, 5200000), (150, 200), chunk)


def test_grid_is_a_geobox_cut_into_chunks():
    grid = _grid()
    assert grid.geobox.affine == grid.transform and tuple(grid.geobox.shape) == grid.shape
    assert grid.geobox.crs.epsg == 32633 and grid.grid_shape == (3, 4)
    assert grid.chunk_window((2, 3)) == Window(128, 150, 192, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        for index in grid.chunk_indices():
            assert grid.chunk_transform(index) == grid.geobox_tiles[index].affine  # bit for bit
    assert grid.bounds == tuple(grid.geobox.boundingbox.bbox) == (500000, 5198500, 502000, 5200000)
    assert grid.chunk_bounds((0, 0)) == (500000, 5199360, 500640, 5200000)


def test_grid_pickles_without_its_geobox_and_compares_by_fields():
    grid = _grid()
    assert grid.geobox is not None  # cached
    again = pickle.loads(pickle.dumps(grid))
    assert again == grid and "geobox" not in vars(again) and again.grid_shape == grid.grid_shape


def test_chunks_within_a_box_on_the_lattice():
    grid = _grid()
    # A box ending exactly on chunk boundaries does not pull in the next chunks.
    assert grid.chunks_within((500000, 5200000 - 640, 500640, 5200000)) == [(0, 0)]
    assert grid.chunks_within((500640, 5200000 - 1280, 501280, 5200000 - 640)) == [(1, 1)]
    # Touching the grid's edges only: nothing (odc-geo's GeoboxTiles.tiles counts these).
    assert grid.chunks_within((499000, 5199000, 500000, 5200000)) == []
    assert grid.chunks_within((500000, 5200000, 502000, 5200500)) == []
    assert grid.chunks_within((499990, 5198400, 502010, 5200010)) == grid.chunk_indices()


def test_pixel_window_clips_and_grows():
    transform = Affine(10, 0, 0, 0, -10, 100)
    assert pixel_window((5, 55, 25, 95), transform, (10, 10)) == Window(0, 5, 0, 3)
    assert pixel_window((5, 55, 25, 95), transform, (10, 10), margin=2) == Window(0, 7, 0, 5)
    assert pixel_window((200, 0, 300, 100), transform, (10, 10)) is None
    assert corner_bounds(transform, (10, 10)) == (0, 0, 100, 100)


@pytest.mark.parametrize("value, expected", [(123.0, 120.0), (120.0, 120.0), (120.0 + 1e-9, 120.0 + 1e-9)])
def test_snapped_moves_outward_and_keeps_values_on_the_lattice(value, expected):
    assert snapped(value, origin=0.0, step=10.0) == expected
    assert snapped(-value, origin=0.0, step=-10.0) == -expected
