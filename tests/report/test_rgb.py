"""Tests for geoseg_batch.report.rgb: band choice and the RGB composite."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg_batch import report
from geoseg_batch.data.bands import L4S_BANDS, default_band_names


def test_rgb_band_indices_landslide4sense() -> None:
    assert report.rgb_band_indices(L4S_BANDS) == (3, 2, 1)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["B01", "B02", "B03", "B04", "B08"], (3, 2, 1)),
        (["nir", "Blue", "Green", "Red"], (3, 2, 1)),
        (["b1", "b2", "b3", "slope", "DEM"], (0, 1, 2)),
        (["B4", "B3", "nir"], (0, 1, 2)),  # no B2: not the Sentinel-2 triple, so the first three
        (["x"], (0, 0, 0)),
        (["x", "y"], (0, 0, 0)),
    ],
)
def test_rgb_band_indices_fallbacks(names, expected) -> None:
    assert report.rgb_band_indices(names) == expected


def test_rgb_band_indices_needs_a_name() -> None:
    with pytest.raises(ValueError, match="band_names: received none"):
        report.rgb_band_indices([])


@pytest.mark.filterwarnings("error")
def test_rgb_composite_picks_b4_b3_b2_for_landslide4sense() -> None:
    h, w = 20, 30
    image = np.empty((h, w, len(L4S_BANDS)), dtype=np.float32)
    for k in range(len(L4S_BANDS)):
        image[:, :, k] = 100.0 * (k + 1)  # every band a distinct constant ...
    yy, xx = np.mgrid[:h, :w]
    image[:, :, L4S_BANDS.index("B4")] = xx  # ... but red varies along x only,
    image[:, :, L4S_BANDS.index("B3")] = yy  # green along y only,
    # and B2 (blue) stays constant: it comes out as flat mid-grey.
    rgb = report.rgb_composite(image, L4S_BANDS)
    assert rgb.shape == (h, w, 3)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert np.all(np.diff(red, axis=0) == 0) and np.all(np.diff(red[0]) >= 0) and red[0, -1] > red[0, 0]
    assert np.all(np.diff(green, axis=1) == 0) and green[-1, 0] > green[0, 0]
    assert np.all(blue == 0.5)


def test_rgb_composite_percentile_stretch() -> None:
    values = np.linspace(0.0, 1000.0, 101 * 3).reshape(101, 3, 1)
    values[0, 0, 0] = 1e9  # an outlier does not wash out the rest
    rgb = report.rgb_composite(np.repeat(values, 3, axis=2), ["red", "green", "blue"])
    assert rgb.min() == 0.0 and rgb.max() == 1.0
    assert 0.3 < np.median(rgb) < 0.7


@pytest.mark.filterwarnings("error")
def test_rgb_composite_nan_safe() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(16, 16, 14))
    image[:4, :4, :] = np.nan
    image[5, 5, 3] = np.inf
    image[..., 1] = np.nan  # B2 (blue) entirely missing
    rgb = report.rgb_composite(image, L4S_BANDS)
    assert np.all(np.isfinite(rgb))
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert np.all(rgb[:4, :4] == 0.0)
    assert rgb[5, 5, 0] == 0.0
    assert np.all(rgb[..., 2] == 0.0)
    assert rgb[8:, 8:, 0].max() > 0.5


def test_rgb_composite_single_band_is_grey() -> None:
    image = np.arange(64, dtype=np.int16).reshape(8, 8, 1)
    rgb = report.rgb_composite(image, ["slope"])
    assert rgb.shape == (8, 8, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[0, 0, 0] == 0.0 and rgb[-1, -1, 0] == 1.0


def test_rgb_composite_generic_names_use_first_three_bands() -> None:
    names = default_band_names(5)
    image = np.zeros((4, 4, 5))
    image[0, 0, 0] = 1.0
    image[1, 1, 1] = 1.0
    image[2, 2, 2] = 1.0
    image[3, 3, 3:] = 1.0
    rgb = report.rgb_composite(image, names)
    assert rgb[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert rgb[1, 1].tolist() == [0.0, 1.0, 0.0]
    assert rgb[2, 2].tolist() == [0.0, 0.0, 1.0]
    assert rgb[3, 3].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("shape", "names", "pattern"),
    [
        ((8, 8), ["a"], r"received shape \(8, 8\), expected \(H, W, C\)"),
        ((8, 8, 3), ["a", "b"], r"received shape \(8, 8, 3\) with 2 band names, expected \(H, W, 2\)"),
        ((1, 8, 8, 3), ["a", "b", "c"], r"received shape \(1, 8, 8, 3\)"),
    ],
)
def test_rgb_composite_validation(shape, names, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        report.rgb_composite(np.zeros(shape), names)


def test_rgb_composite_refuses_text() -> None:
    with pytest.raises(ValueError, match="received dtype <U1, expected numeric"):
        report.rgb_composite(np.full((2, 2, 1), "a"), ["a"])
