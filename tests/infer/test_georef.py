"""Outputs keep the input's georeferencing: rioxarray and GDAL both read back CRS, transform, shape, nodata."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.crs import CRS

from geoseg_batch import predict_scene
from tests.helpers import SHARED_DATA

from tests.helpers import make_bundle, write_scene

needs_gdal = pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo not installed (apt-get install gdal-bin)")


def _gdalinfo(target: str) -> dict:
    done = subprocess.run(["gdalinfo", "-json", target], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _input_nodata_mask(scene) -> np.ndarray:
    with rasterio.open(scene) as src:
        data = src.read()
        return np.any(data == src.nodata, axis=0) if src.nodata is not None else np.zeros(data.shape[1:], bool)


def _check_outputs(scene, out, stem):
    with rasterio.open(scene) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    nodata_in = _input_nodata_mask(scene)
    # zarr through rioxarray (plain open_zarr: spatial_ref must come back as a coordinate)
    dataset = xr.open_zarr(out / f"{stem}.zarr")
    assert "spatial_ref" in dataset.coords
    assert dataset.rio.crs == crs
    assert dataset.rio.transform().almost_equals(transform, precision=1e-12)
    assert dataset["mask"].shape == shape
    mask = xr.open_zarr(out / f"{stem}.zarr", mask_and_scale=False)["mask"].values
    np.testing.assert_array_equal(mask == 255, nodata_in)
    # COGs through rasterio
    for name in ("mask", "probabilities"):
        with rasterio.open(out / f"{stem}_{name}.tif") as cog:
            assert cog.crs == crs and cog.transform.almost_equals(transform, precision=1e-12)
            assert (cog.height, cog.width) == shape and cog.nodata == 255
            assert cog.overviews(1), "COG without overviews"
            np.testing.assert_array_equal(cog.read(1) == 255, nodata_in)
            if name == "mask":
                np.testing.assert_array_equal(cog.read(1), mask)
    # ... and through GDAL's command-line reader
    if shutil.which("gdalinfo"):
        for target in (str(out / f"{stem}_mask.tif"), f'ZARR:"{out / (stem + ".zarr")}":/mask'):
            info = _gdalinfo(target)
            assert CRS.from_wkt(info["coordinateSystem"]["wkt"]) == crs, target
            assert np.allclose(info["geoTransform"], transform.to_gdal(), rtol=0, atol=1e-9), target
            assert info["size"] == [shape[1], shape[0]], target
            assert info["bands"][0]["noDataValue"] == 255, target
        assert _gdalinfo(str(out / f"{stem}_mask.tif"))["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326"])
def test_synthetic_scene_georeferencing(tmp_path, client, crs):
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (333, 517), crs=crs, dtype="int16", nodata=-1)
    with rasterio.open(scene, "r+") as dst:  # a nodata corner
        data = dst.read()
        data[:, :40, :60] = -1
        dst.write(data)
    predict_scene(scene, bundle, tmp_path / "out", tile=128, client=client)
    _check_outputs(scene, tmp_path / "out", "scene")


@pytest.mark.realdata
def test_real_landsat_scene_georeferencing(tmp_path, client):
    scene = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"
    bundle = make_bundle(tmp_path / "m.keras", bands=3)
    result = predict_scene(scene, bundle, tmp_path / "out", tile=256, client=client)
    _check_outputs(scene, tmp_path / "out", "RGB.byte")
    assert result.summary["tiles_skipped"] >= 1  # the collar corners are all nodata


@needs_gdal
def test_zarr_format_3_is_readable_by_rioxarray(tmp_path, client):
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (100, 120))
    predict_scene(scene, bundle, tmp_path / "out", tile=64, zarr_format=3, cog=False, client=client)
    dataset = xr.open_zarr(tmp_path / "out" / "scene.zarr")
    with rasterio.open(scene) as src:
        assert dataset.rio.crs == src.crs and dataset["mask"].shape == (100, 120)


def test_probability_cog_carries_scale_and_offset(tmp_path, client):
    """uint8 probabilities (0..250) are tagged scale 1/250, offset 0: readers show 0..1; float ones are not."""
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (100, 120))
    predict_scene(scene, bundle, tmp_path / "out", tile=64, client=client)
    cog = tmp_path / "out" / "scene_probabilities.tif"
    with rasterio.open(cog) as src:
        assert src.scales == (0.004,) and src.offsets == (0.0,) and src.nodata == 255
    with rasterio.open(tmp_path / "out" / "scene_mask.tif") as src:
        assert src.scales == (1.0,)
    if shutil.which("gdalinfo"):
        text = subprocess.run(["gdalinfo", str(cog)], capture_output=True, text=True, check=True).stdout
        assert re.search(r"Offset: 0,\s*Scale:0\.004\b", text), text
        band = _gdalinfo(str(cog))["bands"][0]
        assert band["scale"] == 0.004 and band["offset"] == 0
    predict_scene(scene, bundle, tmp_path / "float", tile=64, float_output=True, client=client)
    with rasterio.open(tmp_path / "float" / "scene_probabilities.tif") as src:
        assert src.scales == (1.0,) and src.dtypes[0] == "float32"


def test_rotated_scene_outputs_keep_the_rotation(tmp_path, client):
    """A rotated grid: the COGs and rioxarray (spatial_ref's GeoTransform) carry it; GDAL's Zarr driver cannot
    (no 1-D x/y coordinates), and the manifest says so."""
    from affine import Affine

    transform = Affine(10, 2, 500000, 2, -10, 5200000)
    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "rot.tif", (150, 170), transform=transform)
    result = predict_scene(scene, bundle, tmp_path / "out", tile=64, client=client)
    store = xr.open_zarr(tmp_path / "out" / "rot.zarr")
    assert store.rio.transform().almost_equals(transform, precision=1e-9) and store["mask"].shape == (150, 170)
    for name in ("mask", "probabilities"):
        with rasterio.open(tmp_path / "out" / f"rot_{name}.tif") as cog:
            assert cog.transform.almost_equals(transform, precision=1e-9)
    assert "rotated" in result.summary["zarr_georeferencing"]["rot"]


@needs_gdal
def test_which_readers_see_the_zarr_georeferencing(tmp_path):
    """gdalinfo reads the geotransform of every store the manifest says GDAL reads, and of no other."""
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from geoseg_batch.io.zarr_store import create_store, gdal_georeferencing

    cases = {"utm": ((100, 120), Affine(10, 0, 500000, 0, -10, 5200000), "EPSG:32633"),
             "geographic": ((80, 90), Affine(1e-4, 0, 14, 0, -1e-4, 47), "EPSG:4326"),
             "south-up": ((50, 60), Affine(10, 0, 500000, 0, 10, 5200000), "EPSG:32633"),
             "one-row": ((1, 120), Affine(10, 0, 500000, 0, -10, 5200000), "EPSG:32633"),
             "rotated": ((50, 60), Affine(10, 2, 500000, 2, -10, 5200000), "EPSG:32633")}
    for name, (shape, affine, crs) in cases.items():
        geobox = GeoBox(shape, affine, crs)
        create_store(tmp_path / f"{name}.zarr", geobox, 64, ("background", "landslide"), 0.5)
        seen = _gdalinfo(f'ZARR:"{tmp_path / (name + ".zarr")}":/mask').get("geoTransform")
        readers = gdal_georeferencing(geobox)
        if readers == "GDAL and rioxarray":
            assert seen is not None and np.allclose(seen, affine.to_gdal(), rtol=0, atol=1e-12), name
        else:
            assert seen is None or not np.allclose(seen, affine.to_gdal()), name
        assert xr.open_zarr(tmp_path / f"{name}.zarr").rio.transform().almost_equals(affine, precision=1e-12), name
    assert gdal_georeferencing(GeoBox((10, 10), Affine(10, 0, 0, 0, -10, 0), "EPSG:32633"), 3).startswith("rioxarray")
