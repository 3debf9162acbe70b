"""Exact stitching equals one whole-scene forward pass; blend is approximately seamless."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geoseg_batch import predict_scene
from geoseg_batch.geo.grid import TileGrid

from tests.helpers import make_bundle, whole_scene_pass, write_scene

CASES = [  # (rows, cols), tile, model type
    ((1001, 777), 64, "unet"),
    ((1001, 777), 512, "attention_unet"),
    ((130, 4099), 128, "unet"),
    ((130, 4099), 256, "attention_unet"),
    ((301, 419), 64, "attention_unet"),
]


def _probabilities(out, stem: str) -> np.ndarray:
    return np.moveaxis(xr.open_zarr(out / f"{stem}.zarr")["probabilities"].values, 0, -1)


@pytest.mark.parametrize("shape, tile, model_type", CASES)
def test_exact_equals_whole_scene_pass(tmp_path, client, shape, tile, model_type):
    bundle = make_bundle(tmp_path / "m.keras", model_type=model_type)
    scene = write_scene(tmp_path / "scene.tif", shape)
    result = predict_scene(scene, bundle, tmp_path / "out", stitch="exact", tile=tile, float_output=True,
                           cog=False, client=client)
    tiled = _probabilities(tmp_path / "out", "scene")
    reference = whole_scene_pass(bundle, scene)
    assert tiled.shape == reference.shape
    assert np.abs(tiled - reference).max() <= 1e-4
    grid = TileGrid.for_model(shape, tile, 58, 8)
    assert result.summary["tiles_total"] == grid.grid_shape[0] * grid.grid_shape[1]
    assert result.summary["tiles_computed"] == result.summary["tiles_total"]


def test_blend_errors_do_not_concentrate_at_tile_borders(tmp_path, client):
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (700, 900), seed=4)
    tile = 128
    predict_scene(scene, bundle, tmp_path / "out", stitch="blend", tile=tile, float_output=True, cog=False,
                  client=client)
    error = np.abs(_probabilities(tmp_path / "out", "scene") - whole_scene_pass(bundle, scene))[..., 0]
    rows, cols = np.indices(error.shape)
    distance = np.minimum(np.minimum(rows % tile, tile - 1 - rows % tile),
                          np.minimum(cols % tile, tile - 1 - cols % tile))
    inner = (rows >= tile) & (rows < error.shape[0] - tile) & (cols >= tile) & (cols < error.shape[1] - tile)
    border, interior = error[inner & (distance < 8)].mean(), error[inner & (distance >= 8)].mean()
    print(f"blend border {border:.6f} interior {interior:.6f} ratio {border / interior:.3f} max {error.max():.4f}")
    assert border <= 2 * interior, (border, interior)


@pytest.mark.parametrize("stitch", ["exact", "blend"])
def test_batching_tiles_changes_nothing(tmp_path, client, stitch):
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (200, 330))
    for batch in (1, 3):
        predict_scene(scene, bundle, tmp_path / f"b{batch}", stitch=stitch, tile=64, batch_size=batch,
                      float_output=True, cog=False, client=client)
    np.testing.assert_allclose(_probabilities(tmp_path / "b3", "scene"), _probabilities(tmp_path / "b1", "scene"),
                               atol=1e-5)
