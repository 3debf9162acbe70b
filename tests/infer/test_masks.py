"""GDAL masks and alpha bands are nodata: pixels they mask are not predicted, and an alpha band is no data band.

Scenes are built in tmp_path from the real Landsat clip (../shared/data): its collar is filled with
noise that no nodata value catches, so only the alpha band or the internal mask can mark it.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.enums import ColorInterp

from geoseg_batch import predict_scene
from geoseg_batch.errors import DataError
from geoseg_batch.geo.scene import open_scene
from geoseg_batch.model.bundle import read_metadata
from tests.helpers import SHARED_DATA, make_bundle

LANDSAT = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not LANDSAT.exists(), reason="needs ../shared/data (landsat_rgb/RGB.byte.tif)")]


def _landsat() -> tuple[np.ndarray, np.ndarray, dict]:
    """(bands, footprint: True where every band is valid, profile) of the clip."""
    with rasterio.open(LANDSAT) as src:
        data, profile = src.read(), src.profile
    return data, np.all(data != src.nodata, axis=0), profile


def _with_noisy_collar(data: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).integers(1, 255, data.shape, dtype=data.dtype)
    return np.where(footprint, data, noise)


def write_rgba(path, dtype: str = "uint16"):
    """RGB + alpha (the footprint), no nodata value; the collar holds noise."""
    data, footprint, profile = _landsat()
    alpha = np.where(footprint, np.iinfo(dtype).max, 0).astype(dtype)
    profile.update(count=4, dtype=dtype, nodata=None, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.concatenate([_with_noisy_collar(data, footprint).astype(dtype), alpha[None]]))
        dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
    return path, footprint


def write_internal_mask(path):
    """RGB with an internal GDAL mask (the footprint), no nodata value; the collar holds noise."""
    data, footprint, profile = _landsat()
    profile.update(nodata=None, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(_with_noisy_collar(data, footprint))
        dst.write_mask(footprint)
    return path, footprint


def _mask(out, stem):
    return xr.open_zarr(out / f"{stem}.zarr", mask_and_scale=False)["mask"].values


def _probabilities(out, stem):
    return xr.open_zarr(out / f"{stem}.zarr", mask_and_scale=False)["probabilities"].values


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client):
    """A 3-band bundle and its prediction of the original clip (nodata 0 marks the collar)."""
    root = tmp_path_factory.mktemp("reference")
    bundle = make_bundle(root / "m3.keras", bands=3)
    predict_scene(LANDSAT, bundle, root / "out", tile=256, cog=False, client=client)
    return bundle, _probabilities(root / "out", "RGB.byte")


@pytest.mark.parametrize("build", [write_rgba, write_internal_mask], ids=["alpha", "internal-mask"])
def test_masked_pixels_are_nodata_and_the_rest_is_predicted_as_before(tmp_path, client, reference, build):
    bundle, expected = reference
    scene, footprint = build(tmp_path / "scene.tif")
    bands = [1, 2, 3] if build is write_rgba else None  # an alpha band's file needs --bands (named bands need not)
    opened = open_scene(scene, read_metadata(bundle), bands=bands)
    assert opened.band_indexes == (1, 2, 3) and opened.masked
    result = predict_scene(scene, bundle, tmp_path / "out", tile=256, bands=bands, client=client)
    mask = _mask(tmp_path / "out", "scene")
    np.testing.assert_array_equal(mask == 255, ~footprint)  # nothing predicted outside the footprint
    # inside it, exactly the prediction of the clip whose collar is nodata: the noise was never read as data
    np.testing.assert_array_equal(_probabilities(tmp_path / "out", "scene"), expected)
    assert result.summary["tiles_skipped"] >= 1
    with rasterio.open(tmp_path / "out" / "scene_mask.tif") as cog:
        np.testing.assert_array_equal(cog.read(1) == 255, ~footprint)


def test_alpha_band_is_never_chosen_without_bands(tmp_path, client):
    scene, footprint = write_rgba(tmp_path / "rgba.tif")
    four = make_bundle(tmp_path / "m4.keras", bands=4)
    with pytest.raises(DataError, match=r"4 bands, of which band 4 is an alpha band .* expects 4 .*by name or number$") as caught:
        open_scene(scene, read_metadata(four))
    assert "\n" not in str(caught.value)
    three = make_bundle(tmp_path / "m3.keras", bands=3)
    with pytest.raises(DataError, match=r"band 4 is an alpha band .* expects 3 .*e\.g\. --bands 1,2,3$"):
        open_scene(scene, read_metadata(three))
    with rasterio.open(scene, "r+") as dst:  # named bands: the data bands are chosen by name, the alpha never
        dst.descriptions = ("b1", "b2", "b3", "b4")
    assert open_scene(scene, read_metadata(three)).band_indexes == (1, 2, 3)
    with pytest.raises(DataError, match="band 4 is an alpha band"):
        open_scene(scene, read_metadata(four))
    bundle = four
    # asked for by number, the alpha band is fed as data; its pixels still mask
    opened = open_scene(scene, read_metadata(bundle), bands=[1, 2, 3, 4])
    assert opened.band_indexes == (1, 2, 3, 4) and opened.masked
    predict_scene(scene, bundle, tmp_path / "out", tile=256, bands=[1, 2, 3, 4], cog=False, client=client)
    np.testing.assert_array_equal(_mask(tmp_path / "out", "rgba") == 255, ~footprint)


def test_alpha_band_refusal_is_one_line_from_the_cli(tmp_path, capsys, monkeypatch):
    import logging

    from geoseg_batch.cli import main

    # main() logs through a handler on the stderr of its first call: give it this test's (captured) one
    monkeypatch.setattr(logging.getLogger("geoseg_batch"), "handlers", [])
    bundle = make_bundle(tmp_path / "m4.keras", bands=4)
    scene, _ = write_rgba(tmp_path / "rgba.tif", "uint8")
    code = main(["predict", str(scene), "--model", str(bundle), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "band 4 is an alpha band" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("build", [write_rgba, write_internal_mask], ids=["alpha", "internal-mask"])
def test_masks_survive_resampling(tmp_path, build):
    """Resampled (300 m -> 600 m), a masked scene without nodata value keeps its mask through the warp."""
    from geoseg_batch.geo.grid import Window
    from geoseg_batch.infer.reading import SceneInput

    bundle = make_bundle(tmp_path / "m.keras", bands=3, resolution_m=600.0)
    scene, footprint = build(tmp_path / "scene.tif")
    bands = [1, 2, 3] if build is write_rgba else None
    opened = open_scene(scene, read_metadata(bundle), bands=bands, resample=True)
    assert opened.masked and opened.band_indexes == (1, 2, 3)
    rows, cols = opened.shape
    inputs = SceneInput.of(opened)
    valid = inputs.read_valid(Window(0, rows, 0, cols))
    assert abs(valid.mean() - footprint.mean()) < 0.01
    values = np.zeros((rows, cols, 3), np.float32)
    inputs.read_into(Window(0, rows, 0, cols), values)
    assert np.all(values[~valid] == 0) and np.all(values[valid].max(-1) > 0)  # the collar's noise never comes through
