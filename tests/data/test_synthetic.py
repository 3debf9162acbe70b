"""Tests for the synthetic landslide generator: layout, determinism, statistics, windows, GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio

from geoseg_batch.data.bands import L4S_BANDS, default_band_names
from geoseg_batch.data.synthetic import (
    SynthResult,
    make_chip,
    nodata_collar,
    render_window,
    scene_layout,
    synth,
    write_l4s_chips,
    write_scene,
)
from geoseg_batch.errors import ConfigError

NIR, RED, SLOPE, DEM = 7, 3, 12, 13  # band indices in a 14-band (L4S) chip


def _read_chip(chips_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(chips_dir / "img" / f"image_{n}.h5", "r") as f:
        image = f["img"][...]
    with h5py.File(chips_dir / "mask" / f"mask_{n}.h5", "r") as f:
        mask = f["mask"][...]
    return image, mask


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = np.count_nonzero(pred & truth)
    fp = np.count_nonzero(pred & ~truth)
    fn = np.count_nonzero(~pred & truth)
    return 2.0 * tp / (2.0 * tp + fp + fn) if tp else 0.0


@pytest.fixture(scope="module")
def chip_stack() -> tuple[np.ndarray, np.ndarray]:
    """100 chips of 128x128x14, as a training set would see them."""
    pairs = [make_chip(np.random.default_rng([0, n]), 128, 14) for n in range(100)]
    images, masks = zip(*pairs)
    return np.stack(images), np.stack(masks)


# --------------------------------------------------------------------------- chips on disk


def test_write_l4s_chips_layout_shapes_and_dtypes(tmp_path: Path) -> None:
    out = write_l4s_chips(tmp_path / "chips", 3, bands=14, size=32, seed=5)
    assert out == tmp_path / "chips"
    assert sorted(p.name for p in (out / "img").iterdir()) == ["image_1.h5", "image_2.h5", "image_3.h5"]
    assert sorted(p.name for p in (out / "mask").iterdir()) == ["mask_1.h5", "mask_2.h5", "mask_3.h5"]
    for n in (1, 2, 3):
        with h5py.File(out / "img" / f"image_{n}.h5", "r") as f:
            assert list(f.keys()) == ["img"]
            assert f["img"].shape == (32, 32, 14) and f["img"].dtype == np.float32
        with h5py.File(out / "mask" / f"mask_{n}.h5", "r") as f:
            assert list(f.keys()) == ["mask"]
            assert f["mask"].shape == (32, 32) and f["mask"].dtype == np.uint8
        image, mask = _read_chip(out, n)
        assert set(np.unique(mask)) <= {0, 1}
        assert np.isfinite(image).all()
        assert image[..., :12].min() >= 0.0 and image[..., :12].max() <= 0.6
        assert image[..., SLOPE].min() >= 0.0 and image[..., SLOPE].max() <= 60.0
        assert 150.0 <= image[..., DEM].min() and image[..., DEM].max() <= 3100.0


def test_write_l4s_chips_zero_chips_makes_empty_layout(tmp_path: Path) -> None:
    out = write_l4s_chips(tmp_path / "c", 0, bands=3, size=16)
    assert list((out / "img").iterdir()) == [] and list((out / "mask").iterdir()) == []


def test_chips_are_deterministic_per_seed(tmp_path: Path) -> None:
    a = write_l4s_chips(tmp_path / "a", 2, bands=14, size=48, seed=11)
    b = write_l4s_chips(tmp_path / "b", 2, bands=14, size=48, seed=11)
    c = write_l4s_chips(tmp_path / "c", 2, bands=14, size=48, seed=12)
    for n in (1, 2):
        (ia, ma), (ib, mb), (ic, _) = _read_chip(a, n), _read_chip(b, n), _read_chip(c, n)
        assert ia.tobytes() == ib.tobytes() and ma.tobytes() == mb.tobytes()
        assert ia.tobytes() != ic.tobytes()
    # Different chips of one set differ too.
    assert _read_chip(a, 1)[0].tobytes() != _read_chip(a, 2)[0].tobytes()


def test_chip_n_does_not_depend_on_chip_count(tmp_path: Path) -> None:
    few = write_l4s_chips(tmp_path / "few", 2, bands=5, size=32, seed=3)
    many = write_l4s_chips(tmp_path / "many", 5, bands=5, size=32, seed=3)
    for n in (1, 2):
        (i1, m1), (i2, m2) = _read_chip(few, n), _read_chip(many, n)
        assert i1.tobytes() == i2.tobytes() and m1.tobytes() == m2.tobytes()


def test_make_chip_is_deterministic_in_rng_state() -> None:
    a = make_chip(np.random.default_rng(42), 40, 14)
    b = make_chip(np.random.default_rng(42), 40, 14)
    c = make_chip(np.random.default_rng(43), 40, 14)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].tobytes() != c[0].tobytes()


@pytest.mark.parametrize("bands", [1, 2, 3])
def test_few_bands_have_no_terrain_and_bright_landslides(bands: int) -> None:
    images, masks = zip(*(make_chip(np.random.default_rng([9, n]), 64, bands) for n in range(40)))
    image, mask = np.stack(images), np.stack(masks).astype(bool)
    assert image.shape == (40, 64, 64, bands) and image.dtype == np.float32
    assert image.max() <= 0.6  # reflectance only: no slope (degrees) or DEM (metres)
    assert 0.01 < mask.mean() < 0.08
    # Landslides are bare: brighter than the vegetated background in the visible.
    assert image[..., 0][mask].mean() > image[..., 0][~mask].mean() + 0.03


# --------------------------------------------------------------------------- statistics


def test_positive_fraction_is_a_few_percent_with_empty_chips(chip_stack: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = chip_stack
    fraction = masks.mean()
    assert 0.01 <= fraction <= 0.08, fraction
    per_chip = masks.reshape(len(masks), -1).any(axis=1)
    assert not per_chip.all(), "expected some chips without any landslide"
    assert per_chip.mean() > 0.5, "most chips should still hold a landslide"


def test_landslides_are_steep_and_distractors_exist_on_flat_ground(
    chip_stack: tuple[np.ndarray, np.ndarray],
) -> None:
    images, masks = chip_stack
    positive = masks.astype(bool)
    slope = images[..., SLOPE]
    assert np.quantile(slope[positive], 0.02) >= 23.0
    # Slope spans flat to steep across the chips, not only inside landslides.
    assert np.quantile(slope[~positive], 0.2) < 8.0 and np.quantile(slope[~positive], 0.8) > 35.0
    ndvi = _ndvi(images)
    bare_flat_negatives = (~positive) & (ndvi < 0.25) & (slope < 8.0)
    assert bare_flat_negatives.sum() > 0.3 * positive.sum()


def _ndvi(images: np.ndarray) -> np.ndarray:
    nir, red = images[..., NIR], images[..., RED]
    return (nir - red) / (nir + red + 1e-6)


def test_learnable_only_by_combining_bare_and_steep(chip_stack: tuple[np.ndarray, np.ndarray]) -> None:
    images, masks = chip_stack
    truth = masks.astype(bool)
    ndvi, slope = _ndvi(images), images[..., SLOPE]
    bare_thresholds = np.linspace(-0.1, 0.7, 41)
    slope_thresholds = np.linspace(0.0, 58.0, 59)
    bare_only = max(_f1(ndvi < t, truth) for t in bare_thresholds)
    steep_only = max(_f1(slope > t, truth) for t in slope_thresholds)
    combined = _f1((ndvi < 0.28) & (slope > 24.0), truth)  # a fixed hand rule, not fitted
    assert combined >= 0.8, combined
    assert bare_only <= combined - 0.15, (bare_only, combined)
    assert steep_only <= combined - 0.15, (steep_only, combined)


# --------------------------------------------------------------------------- windows


def test_render_window_halves_equal_whole() -> None:
    layout = scene_layout(7, 301, 263, 14)
    whole, whole_mask = render_window(layout, 0, 0, 301, 263)
    assert whole.shape == (301, 263, 14) and whole.dtype == np.float32
    assert whole_mask.shape == (301, 263) and whole_mask.dtype == np.uint8
    assert whole_mask.any()
    top, top_mask = render_window(layout, 0, 0, 137, 263)
    bottom, bottom_mask = render_window(layout, 137, 0, 164, 263)
    assert np.array_equal(np.concatenate([top, bottom]), whole)
    assert np.array_equal(np.concatenate([top_mask, bottom_mask]), whole_mask)
    left, left_mask = render_window(layout, 0, 0, 301, 100)
    right, right_mask = render_window(layout, 0, 100, 301, 163)
    assert np.array_equal(np.concatenate([left, right], axis=1), whole)
    assert np.array_equal(np.concatenate([left_mask, right_mask], axis=1), whole_mask)
    inner, inner_mask = render_window(layout, 71, 45, 90, 111)
    assert np.array_equal(inner, whole[71:161, 45:156]) and np.array_equal(inner_mask, whole_mask[71:161, 45:156])


def test_scene_layout_is_deterministic() -> None:
    assert scene_layout(4, 200, 300, 14) == scene_layout(4, 200, 300, 14)
    assert scene_layout(4, 200, 300, 14) != scene_layout(5, 200, 300, 14)
    a = render_window(scene_layout(4, 64, 64, 6), 0, 0, 64, 64)[0]
    b = render_window(scene_layout(5, 64, 64, 6), 0, 0, 64, 64)[0]
    assert a.tobytes() != b.tobytes()


def test_render_window_outside_scene_is_config_error() -> None:
    layout = scene_layout(0, 50, 60, 3)
    with pytest.raises(ConfigError, match="window"):
        render_window(layout, 40, 0, 20, 60)


# --------------------------------------------------------------------------- GeoTIFF scenes


def test_write_scene_georeferenced_with_collar(tmp_path: Path) -> None:
    layout = scene_layout(2, 300, 340, 14)
    image_path, truth_path = tmp_path / "s.tif", tmp_path / "s_truth.tif"
    write_scene(image_path, truth_path, layout, "EPSG:32633", block_rows=128)
    with rasterio.open(image_path) as src, rasterio.open(truth_path) as truth_src:
        assert src.crs.to_epsg() == 32633 and truth_src.crs == src.crs
        assert src.transform == truth_src.transform
        assert (src.transform.a, src.transform.e) == (10.0, -10.0)
        assert (src.transform.c, src.transform.f) == (500000.0, 5200000.0)
        assert (src.width, src.height, src.count) == (340, 300, 14)
        assert (truth_src.width, truth_src.height, truth_src.count) == (340, 300, 1)
        assert src.dtypes == ("float32",) * 14 and truth_src.dtypes == ("uint8",)
        assert src.nodata == -9999.0 and truth_src.nodata == 255
        assert src.descriptions == L4S_BANDS
        assert src.block_shapes[0] == (256, 256)
        assert src.compression.value.lower() == "zstd"
        image, truth = src.read(), truth_src.read(1)
    nodata = image == -9999.0
    collar = nodata.all(axis=0)
    assert np.array_equal(nodata.any(axis=0), collar), "nodata must cover all bands at once"
    assert 0.01 < collar.mean() < 0.1
    assert np.array_equal(truth == 255, collar)
    assert np.array_equal(collar, nodata_collar(layout, 0, 0, 300, 340))
    # Outside the collar the file holds exactly what render_window gives.
    expected_image, expected_mask = render_window(layout, 0, 0, 300, 340)
    assert np.array_equal(np.moveaxis(image, 0, -1)[~collar], expected_image[~collar])
    assert np.array_equal(truth[~collar], expected_mask[~collar])
    assert truth[~collar].any()


def test_synth_writes_chips_and_scenes_in_both_crs(tmp_path: Path) -> None:
    result = synth(tmp_path / "out", chips=2, bands=4, size=16, scenes=2, seed=1, scene_height=64, scene_width=80)
    assert isinstance(result, SynthResult)
    assert result.chips_dir == tmp_path / "out" / "chips"
    assert (result.chips_dir / "img" / "image_2.h5").is_file()
    assert result.scenes == (tmp_path / "out" / "scenes" / "scene_1.tif", tmp_path / "out" / "scenes" / "scene_2.tif")
    assert result.truths == (
        tmp_path / "out" / "scenes" / "scene_1_truth.tif",
        tmp_path / "out" / "scenes" / "scene_2_truth.tif",
    )
    epsgs = []
    for scene, truth in zip(result.scenes, result.truths):
        with rasterio.open(scene) as src, rasterio.open(truth) as truth_src:
            epsgs.append(src.crs.to_epsg())
            assert (src.width, src.height, src.count) == (80, 64, 4)
            assert src.descriptions == default_band_names(4)
            assert truth_src.transform == src.transform and truth_src.crs == src.crs
    assert epsgs == [32633, 4326]
    with rasterio.open(result.scenes[1]) as src:
        assert src.transform.a == pytest.approx(0.0001) and src.transform.c == pytest.approx(15.03)
        assert src.transform.f == pytest.approx(46.96)


def test_synth_without_chips_or_scenes(tmp_path: Path) -> None:
    result = synth(tmp_path, chips=0, scenes=0)
    assert result == SynthResult(chips_dir=None, scenes=(), truths=())


def test_synth_is_deterministic(tmp_path: Path) -> None:
    kwargs = dict(chips=1, bands=3, size=16, scenes=1, seed=4, scene_height=40, scene_width=48)
    first, second = synth(tmp_path / "a", **kwargs), synth(tmp_path / "b", **kwargs)
    with rasterio.open(first.scenes[0]) as a, rasterio.open(second.scenes[0]) as b:
        assert a.read().tobytes() == b.read().tobytes()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(chips=-1), "chips"),
        (dict(bands=0), "bands"),
        (dict(size=7), "size"),
        (dict(scenes=-2), "scenes"),
        (dict(seed=-1), "seed"),
        (dict(chips=1.5), "chips"),
        (dict(scene_height=0), "scene_height"),
    ],
)
def test_synth_rejects_bad_arguments(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        synth(tmp_path, **kwargs)
    assert "got" in str(info.value) and "expected" in str(info.value)
    assert not any(tmp_path.iterdir()), "nothing is written when arguments are bad"


def test_other_entry_points_reject_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size"):
        make_chip(np.random.default_rng(0), 4, 14)
    with pytest.raises(ConfigError, match="bands"):
        write_l4s_chips(tmp_path, 1, bands=0)
    with pytest.raises(ConfigError, match="height"):
        scene_layout(0, 0, 10, 3)
    with pytest.raises(ConfigError, match="crs"):
        write_scene(tmp_path / "s.tif", tmp_path / "t.tif", scene_layout(0, 16, 16, 3), "EPSG:not-a-crs")
