"""Tests for geoseg_batch.report.quicklooks: decimated raster reads and the quicklook PNGs.

Beyond "a PNG exists": the image drawn shows the data (it varies, nodata is transparent)
and the PNG is not blank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg_batch import report
from geoseg_batch.report import quicklooks

from .conftest import assert_png, legend_texts, png_pixels


@pytest.mark.parametrize("kind", ["scene", "probabilities", "mask"])
def test_quicklook_reads_decimated_and_writes_a_png(kind: str, rasters, read_shapes, out_dir: Path) -> None:
    out = report.quicklook_png(rasters[kind], out_dir / f"{kind}.png", kind, max_side=256)
    assert out == out_dir / f"{kind}.png"
    width, height = assert_png(out, min_size=(200, 200))
    assert width <= 256 + 300 and height <= 256 + 150  # the image plus title, colour bar or legend
    assert read_shapes and None not in read_shapes
    assert all(max(shape[1:]) <= 256 for shape in read_shapes)  # never the 1100 x 700 full resolution
    expected_bands = {"scene": 3, "probabilities": 1, "mask": 1}[kind]  # B4, B3, B2 only: B8 is not read
    assert read_shapes == [(expected_bands, 256, 163)]
    pixels = png_pixels(out).astype(float)
    assert pixels.std(axis=(0, 1)).max() > 10  # the picture varies: it shows the data


@pytest.mark.parametrize("kind", ["scene", "probabilities", "mask"])
def test_quicklook_figure_shows_the_data(kind: str, rasters) -> None:
    fig = report.quicklook_figure(rasters[kind], kind, max_side=256)
    ax = fig.axes[0]
    (image,) = ax.images
    shown = np.ma.asarray(image.get_array())
    assert shown.shape[:2] == (256, 163)
    valid = shown[100:, 80:]  # away from the nodata corner (rows < 300/1100, cols < 200/700)
    assert np.ma.count_masked(valid) == 0 and float(valid.std()) > 0.01  # not uniform
    title = ax.get_title()
    assert title.startswith(f"{rasters[kind].name}: {kind}\n") and title.endswith("700x1100 px, shown at 163x256")
    corner = shown[:60, :40]
    if kind == "scene":
        assert "RGB = B4,B3,B2, 2-98% stretch" in title
        assert np.all(corner[..., 3] == 0) and np.all(shown[100:, 80:, 3] == 1)  # nodata transparent
    else:
        assert corner.mask.all()  # nodata masked: the grey background shows through
    if kind == "probabilities":
        colorbar = fig.axes[1]
        assert colorbar.get_ylabel() == "probability" and "\nprobability\n" in title
        assert 0.0 <= valid.min() and valid.max() <= 1.0 and 0.4 < valid.mean() < 0.6  # 0..250 back to 0..1
    if kind == "mask":
        assert legend_texts(fig.legends[0]) == ["class 0", "class 1", "nodata"]
        assert "\n2 classes\n" in title and set(np.unique(valid)) == {0.0, 1.0}


def test_quicklook_nodata_and_scaling_of_the_decimated_read(rasters) -> None:
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(rasters["scene"]) as src:
        bands = quicklooks._read_decimated(src, [3, 2, 1], (110, 70), Resampling.average)
    assert bands.shape == (3, 110, 70)
    assert np.isnan(bands[:, :25, :15]).all()  # -9999 became NaN (transparent), not a stretched value
    assert np.isfinite(bands[:, 40:, 30:]).all() and 900 < np.nanmean(bands) < 1500
    with rasterio.open(rasters["mask"]) as src:
        classes = quicklooks._read_decimated(src, [1], (110, 70), Resampling.nearest)[0]
    assert set(np.unique(classes[np.isfinite(classes)])) == {0.0, 1.0}


def test_quicklook_small_raster_is_not_enlarged(rasters, read_shapes, out_dir: Path) -> None:
    report.quicklook_png(rasters["plain"], out_dir / "small.png", "scene", max_side=768)  # 2 bands: grey
    assert read_shapes == [(1, 40, 50)]
    assert_png(out_dir / "small.png", min_size=(100, 100))
    fig = report.quicklook_figure(rasters["plain"], "scene", max_side=768)
    rgb = fig.axes[0].images[0].get_array()
    assert rgb.shape == (40, 50, 4)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])  # grey
    assert fig.axes[0].get_title().endswith("\n50x40 px")  # shown as it is: no "shown at"


def test_quicklook_multiband_float_probabilities_show_the_highest(tmp_path: Path) -> None:
    from .conftest import write_raster

    values = np.zeros((3, 40, 30), dtype=np.float32)
    values[0, :, :10] = 0.9
    values[1, :, 10:20] = 0.6
    values[2, :, 20:] = 0.3
    values[:, :5, :5] = np.nan
    raster = write_raster(tmp_path / "p.tif", values, None, cog=False)
    fig = report.quicklook_figure(raster, "probabilities", max_side=64)
    shown = np.ma.asarray(fig.axes[0].images[0].get_array())
    assert shown.mask[:5, :5].all()
    assert np.allclose(shown[10, [0, 15, 25]], [0.9, 0.6, 0.3])
    assert fig.axes[1].get_ylabel() == "max class probability"


def test_quicklook_validation(rasters, tmp_path: Path, out_dir: Path) -> None:
    from geoseg_batch.errors import DataError, InputError, MissingInputError

    with pytest.raises(InputError, match="expected one of scene, probabilities, mask"):
        report.quicklook_png(rasters["mask"], out_dir / "x.png", "rgb")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="max_side"):
        report.quicklook_png(rasters["mask"], out_dir / "x.png", "mask", max_side=4)
    with pytest.raises(MissingInputError, match="not found"):
        report.quicklook_png(tmp_path / "missing.tif", out_dir / "x.png", "mask")
    store = tmp_path / "scene.zarr"
    store.mkdir()
    with pytest.raises(InputError, match="pass the COG"):
        report.quicklook_png(store, out_dir / "x.png", "mask")
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(DataError, match="not a raster"):
        report.quicklook_png(junk, out_dir / "x.png", "scene")
    assert list(out_dir.iterdir()) == []


def test_prediction_quicklooks_of_a_predict_output(rasters, out_dir: Path) -> None:
    entry = {"scene": str(rasters["scene"]), "zarr": "ignored.zarr", "mask_cog": str(rasters["mask"]),
             "probability_cog": str(rasters["probabilities"])}
    made = report.prediction_quicklooks(entry, out_dir, max_side=128)
    assert [caption for caption, _ in made] == [
        "scene: scene (scene.tif)", "scene: probabilities (scene_probabilities.tif)",
        "scene: mask (scene_mask.tif)"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(png.name for _, png in made)
    only_zarr = report.prediction_quicklooks({"scene": str(rasters["scene"]), "mask_cog": None}, out_dir / "z", 128)
    assert [png.name for _, png in only_zarr] == ["scene_scene.png"]


def test_prediction_quicklooks_name_kinds_and_a_large_scene_without_overviews(rasters, out_dir: Path,
                                                                             monkeypatch) -> None:
    entry = {"scene": str(rasters["plain"]), "mask_cog": str(rasters["mask"])}
    made = report.prediction_quicklooks(entry, out_dir, max_side=64, name="tile7", kinds=("mask",))
    assert made == [("tile7: mask (scene_mask.tif)", out_dir / "tile7_mask.png")]
    monkeypatch.setattr(quicklooks, "QUICKLOOK_FULL_READ_PIXELS", 100)  # plain.tif: 2000 px, no overviews
    assert report.prediction_quicklooks(entry, out_dir / "skip", max_side=64, kinds=("scene",)) == []
    assert not (out_dir / "skip").exists()


def test_quicklook_sources_name_the_output_keys() -> None:
    assert report.QUICKLOOK_SOURCES == {"scene": "scene", "probabilities": "probability_cog", "mask": "mask_cog"}
