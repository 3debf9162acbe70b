"""GCP-georeferenced scenes (as Sentinel-1 GRD is delivered) are read through a warped view onto the GCPs' CRS.

The scene is the real Landsat clip (../shared/data) with its geotransform replaced by GCPs (its
corners and a few interior points); outputs carry the GCPs' CRS, on GDAL's suggested grid for them.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform

from geoseg_batch import predict_scene
from geoseg_batch.errors import DataError
from geoseg_batch.geo.scene import open_scene
from geoseg_batch.model.bundle import read_metadata
from tests.helpers import SHARED_DATA, make_bundle

LANDSAT = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not LANDSAT.exists(), reason="needs ../shared/data (landsat_rgb/RGB.byte.tif)")]


def write_gcp_scene(path, nodata: float | None = 0):
    """The clip with GCPs (corners and interior points, in its own CRS) instead of a geotransform."""
    with rasterio.open(LANDSAT) as src:
        data, transform, crs = src.read(), src.transform, src.crs
        rows, cols = src.height, src.width
    points = [(0, 0), (0, cols), (rows, 0), (rows, cols), (rows // 3, cols // 2), (2 * rows // 3, cols // 4),
              (rows // 2, 3 * cols // 4)]
    gcps = [GroundControlPoint(row=r, col=c, x=(transform * (c, r))[0], y=(transform * (c, r))[1], id=str(n))
            for n, (r, c) in enumerate(points)]
    profile = {"driver": "GTiff", "height": rows, "width": cols, "count": 3, "dtype": "uint8", "nodata": nodata,
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.gcps = (gcps, crs)
    return path


def _expected_grid(scene):
    with rasterio.open(scene) as src:
        gcps, crs = src.gcps
        transform, width, height = calculate_default_transform(crs, crs, src.width, src.height, gcps=gcps)
    return crs, transform, (height, width)


@pytest.mark.parametrize("nodata", [0, None], ids=["nodata", "no-nodata"])
def test_gcp_scene_predicts_on_the_warped_grid_in_the_gcp_crs(tmp_path, client, nodata):
    scene = write_gcp_scene(tmp_path / "s1.tif", nodata)
    crs, transform, shape = _expected_grid(scene)
    bundle = make_bundle(tmp_path / "m.keras", bands=3)
    opened = open_scene(scene, read_metadata(bundle))
    assert opened.resampled is not None and CRS.from_user_input(opened.resampled.gcp_crs) == crs
    assert opened.shape == shape and opened.masked == (nodata is None)  # no nodata: the view's alpha masks
    predict_scene(scene, bundle, tmp_path / "out", tile=256, client=client)
    store = xr.open_zarr(tmp_path / "out" / "s1.zarr")
    assert store.rio.crs == crs and store.rio.transform().almost_equals(transform, precision=1e-9)
    assert store["mask"].shape == shape
    for name in ("mask", "probabilities"):
        with rasterio.open(tmp_path / "out" / f"s1_{name}.tif") as cog:
            assert cog.crs == crs and cog.transform.almost_equals(transform, precision=1e-9)
    # GCPs that are exactly the clip's affine: the warped grid is the clip's, less GDAL's squaring of its
    # pixels (300.038 x 300.042 m -> 300.040 m), so its collar comes out nodata (nearly) where the clip's is
    with rasterio.open(LANDSAT) as src:
        assert src.crs == crs and (src.height, src.width) == shape
        assert np.allclose(tuple(src.transform)[:6], tuple(transform)[:6], rtol=1e-4, atol=1e-3)
        collar = np.any(src.read() == 0, axis=0)
    mask = xr.open_zarr(tmp_path / "out" / "s1.zarr", mask_and_scale=False)["mask"].values
    if nodata is None:  # the collar's zeros are data; the view's alpha marks only what the GCPs do not cover
        assert (mask != 255).mean() > 0.98
    else:
        assert (mask[collar] == 255).mean() > 0.98 and (mask[~collar] != 255).mean() > 0.98


def test_resampling_a_gcp_scene_is_refused_with_the_gdalwarp_line(tmp_path):
    scene = write_gcp_scene(tmp_path / "s1.tif")
    bundle = make_bundle(tmp_path / "m.keras", bands=3, resolution_m=600.0)
    with pytest.raises(DataError, match=r"GCPs is not supported; .*`gdalwarp -r bilinear .*s1.tif s1_warped.tif`"):
        open_scene(scene, read_metadata(bundle), resample=True)
