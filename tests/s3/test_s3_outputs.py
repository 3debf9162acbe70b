"""predict into s3:// on the loopback S3 server: results bitwise equal to a local run, published as a version
behind the pointer object, readable by rioxarray and by GDAL's command-line tools over /vsis3/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr

from geoseg_batch.cli import main
from geoseg_batch.io.object_storage import POINTER_NAME, current_version
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import ObjectPath

from tests.helpers import SHARED_DATA, make_bundle, write_scene

RGB = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "m.keras", bands=3)


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    """The real Landsat RGB sample where it is present, else a synthetic 3-band scene of about its size."""
    if RGB.exists():
        return RGB
    return write_scene(tmp_path_factory.mktemp("scene") / "RGB.byte.tif", (718, 791), bands=3)


def _arrays(store: str, options: dict | None = None) -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r", storage_options=options)
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def _gdal_env(s3) -> dict[str, str]:
    """The environment GDAL's command-line tools read the loopback server with."""
    return {**os.environ, "AWS_S3_ENDPOINT": s3.host_port, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def test_predict_s3_to_s3_equals_local(tmp_path, s3_env, bundle, scene_file):
    url = s3_env.upload(scene_file, "in/RGB.byte.tif")
    out = f"s3://{s3_env.bucket}/results/rgb"
    common = ["--model", str(bundle), "--tile", "256", "--workers", "1", "--polygons"]
    assert main(["predict", str(scene_file), "--out", str(tmp_path / "local"), *common]) == 0
    assert main(["predict", url, "--out", out, *common]) == 0
    cloud = CloudSettings.of()
    version = current_version(ObjectPath(out), cloud)
    assert version is not None and str(version).startswith(f"{out}/versions/")
    options = cloud.storage_options()
    expected, got = _arrays(str(tmp_path / "local" / "RGB.byte.zarr")), _arrays(f"{version}/RGB.byte.zarr", options)
    assert expected.keys() == got.keys() and {"mask", "probabilities"} <= set(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    fs = cloud.filesystem("s3")
    manifest = json.loads(fs.cat_file(f"{version.key}/manifest.json"))
    entry = manifest["outputs"][0]
    assert entry["zarr"] == f"{version}/RGB.byte.zarr" and entry["scene"] == url
    assert not fs.exists(f"{version.key}/.done"), "completion records are not published"
    assert fs.exists(f"{version.key}/report.html") and fs.exists(f"{version.key}/state.json")
    assert fs.exists(f"{version.key}/RGB.byte_polygons.gpkg")
    assert not fs.exists(f"{s3_env.bucket}/results/rgb/.lease.json"), "the lease is released"
    CloudSettings.of().apply()
    for cog in ("RGB.byte_mask.tif", "RGB.byte_probabilities.tif"):
        with rasterio.open(tmp_path / "local" / cog) as a, rasterio.open(f"/vsis3/{version.key}/{cog}") as b:
            assert (a.crs, a.transform, a.shape, a.nodata) == (b.crs, b.transform, b.shape, b.nodata)
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=cog)
    _check_georeferencing(s3_env, version, scene_file, options)


def _check_georeferencing(s3, version: ObjectPath, scene_file: Path, options: dict) -> None:
    """The store's CRS and transform, read back through rioxarray and through gdalinfo over /vsis3/."""
    import rioxarray  # noqa: F401
    import xarray as xr

    with rasterio.open(scene_file) as src:
        crs, transform = src.crs, src.transform
    dataset = xr.open_zarr(f"{version}/RGB.byte.zarr", storage_options=options)
    assert dataset.rio.crs == crs and dataset.rio.transform().almost_equals(transform)
    if shutil.which("gdalinfo") is None:
        pytest.skip("gdalinfo (gdal-bin) is not installed")
    for name in (f'ZARR:"/vsis3/{version.key}/RGB.byte.zarr":/mask', f"/vsis3/{version.key}/RGB.byte_mask.tif"):
        info = json.loads(subprocess.run(["gdalinfo", "-json", name], env=_gdal_env(s3), check=True,
                                         capture_output=True, text=True, timeout=60).stdout)
        assert info["size"] == [scene_file_width(scene_file), scene_file_height(scene_file)], name
        np.testing.assert_allclose(info["geoTransform"], transform.to_gdal(), err_msg=name)
        assert "EPSG\",32618" in info["coordinateSystem"]["wkt"].replace(" ", "") or crs.to_epsg() is None or \
            str(crs.to_epsg()) in info["coordinateSystem"]["wkt"], name


def scene_file_width(path: Path) -> int:
    with rasterio.open(path) as src:
        return src.width


def scene_file_height(path: Path) -> int:
    with rasterio.open(path) as src:
        return src.height


def test_pointer_names_the_newest_of_three_versions(tmp_path, s3_env, bundle):
    """Each incremental run publishes a new version through the pointer; 3 are kept; the old ones stay whole."""
    scene = s3_env.upload(write_scene(tmp_path / "a.tif", (64, 64), seed=1), "inc/a.tif")
    out = f"s3://{s3_env.bucket}/results/inc"
    args = ["predict", "--model", str(bundle), "--out", out, "--workers", "1", "--tile", "64", "--no-cog",
            "--incremental", scene]
    fs = CloudSettings.of().filesystem("s3")
    seen = []
    for n in range(4):
        if n:
            s3_env.upload(write_scene(tmp_path / f"b{n}.tif", (64, 64), seed=10 + n), f"inc/b{n}.tif")
            args.append(f"s3://{s3_env.bucket}/inc/b{n}.tif")
        assert main(args) == 0
        pointer = json.loads(fs.cat_file(f"{s3_env.bucket}/results/inc/{POINTER_NAME}"))
        seen.append(pointer["version"])
        manifest = json.loads(fs.cat_file(f"{ObjectPath(pointer['url']).key}/manifest.json"))
        assert manifest["summary"]["scenes_reused"] == (1 if n else 0) + max(n - 1, 0)
        assert manifest["summary"]["scenes_predicted"] == 1
    assert len(set(seen)) == 4
    versions = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_env.bucket}/results/inc/versions", refresh=True))
    assert versions == sorted(seen[-3:]), "the 3 newest versions are kept"
    assert pointer["history"] == seen[::-1][:3]
