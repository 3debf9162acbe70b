"""The input quicklook from the model tasks' own reads: pieces add up to the cell means of the valid pixels, and a
predict run's report draws the scene from them (exact and blend) without reading it again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg_batch import predict_scene
from geoseg_batch.geo.grid import TileGrid
from geoseg_batch.infer.thumbnail import ThumbnailSpec, assembled, cells_shape, thumbnail_piece, thumbnail_spec
from geoseg_batch.runs import predict_report
from tests.helpers import make_bundle, write_scene


def _cell_means(values: np.ndarray, valid: np.ndarray, factor: int) -> np.ndarray:
    """(cells rows, cells cols, bands): the mean of each cell's valid pixels on the lattice, NaN where none (the
    reference)."""
    step = max(1, round(factor / 3))
    lines = np.arange(valid.shape[0])[:, None] % step == 0
    valid = valid & lines & (np.arange(valid.shape[1])[None, :] % step == 0)
    rows, cols = cells_shape(valid.shape, factor)
    means = np.full((rows, cols, values.shape[-1]), np.nan, np.float64)
    for r in range(rows):
        for c in range(cols):
            cell = (slice(r * factor, (r + 1) * factor), slice(c * factor, (c + 1) * factor))
            if valid[cell].any():
                means[r, c] = values[cell][valid[cell]].mean(axis=0)
    return means


def test_pieces_of_every_tile_add_up_to_the_cell_means_of_the_valid_pixels():
    rng = np.random.default_rng(3)
    shape, factor = (150, 130), 7  # tiles of 32: cores cut cells, the last cells are partial
    values = rng.normal(0, 1, (*shape, 5)).astype(np.float32)
    valid = rng.random(shape) > 0.3
    valid[:40, :50] = False  # whole cells without a valid pixel
    values[~valid] = 0.0  # as normalization leaves them
    spec = ThumbnailSpec(factor, (3, 0, 1), ("r", "g", "b"))
    grid = TileGrid(shape, 32, 8, 8)
    pieces = [thumbnail_piece(t.core, values[t.core.slices()], valid[t.core.slices()], spec) for t in grid.tiles()]
    stack = assembled([p for p in pieces if p is not None], shape, spec)
    expected = _cell_means(values[..., [3, 0, 1]], valid, factor)
    assert stack.shape == (22, 19, 3) and np.isnan(stack[0, 0]).all()
    np.testing.assert_allclose(stack, expected, rtol=1e-5, atol=1e-6)
    assert thumbnail_piece(grid.tile_at(0, 0).core, values[:32, :32], np.zeros((32, 32), bool), spec) is None


def test_the_spec_picks_the_quicklook_bands_among_the_model_inputs():
    names = ("B2", "B3", "B4", "B8")
    spec = thumbnail_spec(names, (4, 3, 2, 1), (8000, 6000))  # the model reads B8, B4, B3, B2
    assert spec == ThumbnailSpec(11, (1, 2, 3), ("B4", "B3", "B2"))  # 8000 / 11 = 728 <= 768
    assert thumbnail_spec(names, (4, 3), (100, 100)) is None  # B2 is not a model input: read it decimated
    assert thumbnail_spec((None, None, None), (1, 2, 3), (500, 700)).factor == 1


@pytest.mark.parametrize("stitch", ["exact", "blend"])
def test_the_report_draws_the_scene_from_the_tiles_own_reads(tmp_path, client, monkeypatch, stitch):
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (900, 1000), seed=5, nodata=0)
    with rasterio.open(scene, "r+") as dst:  # a nodata hole over whole and partial cells
        hole = dst.read()
        hole[:, 100:301, 40:333] = 0
        dst.write(hole)
    drawn = tmp_path / "drawn.npy"
    original = predict_report._thumbnail_quicklook

    def recorded(stack, *args):
        np.save(drawn, stack)
        return original(stack, *args)

    monkeypatch.setattr(predict_report, "_thumbnail_quicklook", recorded)
    predict_scene(scene, bundle, tmp_path / "out", stitch=stitch, tile=128, client=client)
    with rasterio.open(scene) as src:
        raw = np.moveaxis(src.read(), 0, -1).astype(np.float32)
    valid = (raw != 0).all(axis=-1)
    normalized = np.where(valid[..., None], (raw - 100.0) / 50.0, 0.0)
    np.testing.assert_allclose(np.load(drawn), _cell_means(normalized, valid, 2), rtol=1e-5, atol=1e-5)  # step 1
    assert Path(tmp_path / "out" / "report" / "scene_scene.png").stat().st_size > 0
