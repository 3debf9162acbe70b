"""predict --resample: scenes read on the bundle's training resolution, window by window."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from geoseg_batch import predict_scene
from geoseg_batch.errors import DataError

from tests.helpers import make_bundle, whole_scene_pass, write_scene


def test_a_20m_scene_is_predicted_on_the_bundles_10m_grid_seamlessly(tmp_path, client):
    import rioxarray  # noqa: F401

    from geoseg_batch.geo.scene import resampled_grid

    bundle = make_bundle(tmp_path / "m.keras", resolution_m=10.0)
    scene = write_scene(tmp_path / "s20.tif", (70, 55), transform=from_origin(500000, 5200000, 20, 20))
    result = predict_scene(scene, bundle, tmp_path / "out", tile=32, stitch="exact", resample=True,
                           float_output=True, client=client)
    store = xr.open_zarr(result.outputs[0]["zarr"])
    assert store.rio.transform() == from_origin(500000, 5200000, 10, 10)
    assert store["mask"].shape == (140, 110) and store.rio.crs.to_epsg() == 32633
    with rasterio.open(scene) as src:
        grid = resampled_grid(src, 10.0)
    expected = whole_scene_pass(bundle, scene, resampled=grid)[..., 0]
    assert np.abs(store["probabilities"].values[0] - expected).max() <= 1e-4
    with rasterio.open(result.outputs[0]["mask_cog"]) as cog:
        assert cog.transform == from_origin(500000, 5200000, 10, 10) and cog.shape == (140, 110)


def test_a_5m_scene_is_averaged_onto_the_10m_grid_seamlessly_with_the_kernel_asked_for(tmp_path, client):
    import json

    from geoseg_batch.geo.scene import resampled_grid

    bundle = make_bundle(tmp_path / "m.keras", resolution_m=10.0)
    scene = write_scene(tmp_path / "s5.tif", (150, 118), transform=from_origin(500000, 5200000, 5, 5))
    result = predict_scene(scene, bundle, tmp_path / "out", tile=32, stitch="exact", resample=True,
                           resampling="average", float_output=True, client=client)
    store = xr.open_zarr(result.outputs[0]["zarr"])
    assert store.rio.transform() == from_origin(500000, 5200000, 10, 10) and store["mask"].shape == (75, 59)
    with rasterio.open(scene) as src:
        averaged, bilinear = resampled_grid(src, 10.0, "average"), resampled_grid(src, 10.0)
    expected = whole_scene_pass(bundle, scene, resampled=averaged)[..., 0]
    assert np.abs(store["probabilities"].values[0] - expected).max() <= 1e-4
    assert np.abs(whole_scene_pass(bundle, scene, resampled=bilinear)[..., 0] - expected).max() > 1e-3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["resampling"] == "average"


def test_a_resampling_kernel_without_resample_is_refused_before_anything_is_written(tmp_path):
    from geoseg_batch.errors import ConfigError

    bundle = make_bundle(tmp_path / "m.keras", resolution_m=10.0)
    scene = write_scene(tmp_path / "s.tif", (40, 40))
    with pytest.raises(ConfigError, match="resampling: got 'cubic' without resample"):
        predict_scene(scene, bundle, tmp_path / "out", tile=32, resampling="cubic")
    with pytest.raises(ConfigError, match="resampling"):
        predict_scene(scene, bundle, tmp_path / "out", tile=32, resample=True, resampling="bicubic")
    assert not (tmp_path / "out").exists()


def test_a_geographic_scene_is_resampled_to_metres_at_its_centre(tmp_path):
    from geoseg_batch.geo.scene import resampled_grid

    scene = write_scene(tmp_path / "geo.tif", (40, 40), crs="EPSG:4326")  # 0.0001 deg pixels at 47 N
    with rasterio.open(scene) as src:
        grid = resampled_grid(src, 20.0)
    x_size, y_size = grid.transform[0], -grid.transform[4]
    # a degree on the WGS84 ellipsoid at the scene's centre latitude: parallel and meridian arcs
    a, e2, lat = 6_378_137.0, 0.00669437999014, np.radians(47.0 - 20 * 0.0001)
    east = np.pi / 180 * a * np.cos(lat) / np.sqrt(1 - e2 * np.sin(lat) ** 2)
    north = np.pi / 180 * a * (1 - e2) / (1 - e2 * np.sin(lat) ** 2) ** 1.5
    assert x_size == pytest.approx(20.0 / east, rel=1e-4) and y_size == pytest.approx(20.0 / north, rel=1e-4)
    assert grid.shape == (round(40 * 0.0001 / y_size), round(40 * 0.0001 / x_size))


def test_resample_needs_a_bundle_that_records_its_resolution(tmp_path):
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "s.tif", (40, 40))
    with pytest.raises(DataError, match="resolution"):
        predict_scene(scene, bundle, tmp_path / "out", tile=32, resample=True)
    assert not (tmp_path / "out").exists()


def test_a_scene_already_at_the_bundles_resolution_is_read_as_is(tmp_path):
    from geoseg_batch.geo.scene import resampled_grid

    scene = write_scene(tmp_path / "s.tif", (40, 40))  # 10 m
    with rasterio.open(scene) as src:
        assert resampled_grid(src, 10.0) is None
