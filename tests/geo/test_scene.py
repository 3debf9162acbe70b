"""normalize_in_place: one affine map per band, nodata and non-finite pixels found and zeroed, in place."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from geoseg_batch.geo.scene import normalize_in_place

BANDS = 5


def _reference(raw: np.ndarray, scene, metadata) -> tuple[np.ndarray, np.ndarray]:
    """The plain formula, pixel by pixel."""
    std = np.maximum(np.asarray(metadata.normalization["std"], np.float32), 1e-6)
    values = (raw * np.asarray(scene.scales, np.float32) + np.asarray(scene.offsets, np.float32)
              - np.asarray(metadata.normalization["mean"], np.float32)) / std
    invalid = ~np.isfinite(values).all(axis=-1)
    if scene.nodata is not None and not np.isnan(scene.nodata):
        invalid |= (raw == np.float32(scene.nodata)).any(axis=-1)
    values[invalid] = 0
    return values, ~invalid


@pytest.mark.parametrize("nodata", [-9999.0, float("nan"), None])
def test_normalizes_a_window_of_a_buffer_and_finds_every_kind_of_nodata(nodata):
    rng = np.random.default_rng(0)
    scene = SimpleNamespace(nodata=nodata, scales=tuple(rng.uniform(0.5, 2, BANDS)),
                            offsets=tuple(rng.uniform(-5, 5, BANDS)))
    metadata = SimpleNamespace(normalization={"mean": list(rng.uniform(0, 100, BANDS)),
                                              "std": [0.0] + list(rng.uniform(1, 30, BANDS - 1))})  # 0: clamped
    buffer = rng.uniform(0, 200, (40, 50, BANDS)).astype(np.float32)
    window = buffer[3:31, 7:45]  # rows of the buffer are longer than the window's: not contiguous
    window[2, 3, 1] = np.nan
    window[4, 5, 4] = np.inf
    window[6, 7, 0] = -np.inf
    window[8, 9, 2] = -9999.0  # nodata only when declared so
    window[10, 11] = np.nan  # every band
    expected, expected_valid = _reference(window.copy(), scene, metadata)
    outside = buffer.copy()

    valid = normalize_in_place(window, scene, metadata, float_source=True)

    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_allclose(window, expected, rtol=1e-4, atol=1e-4)  # float32: (x*s+o-m)/std vs x*gain+bias
    assert not valid[2, 3] and not valid[4, 5] and not valid[6, 7] and not valid[10, 11]
    assert valid[8, 9] == (nodata != -9999.0)
    untouched = np.ones(buffer.shape[:2], bool)
    untouched[3:31, 7:45] = False
    np.testing.assert_array_equal(buffer[untouched], outside[untouched])  # only the window changed


def test_integer_sources_are_only_checked_for_nodata():
    scene = SimpleNamespace(nodata=0.0, scales=(1.0,) * BANDS, offsets=(0.0,) * BANDS)
    metadata = SimpleNamespace(normalization={"mean": [10.0] * BANDS, "std": [2.0] * BANDS})
    values = np.full((4, 6, BANDS), 12, np.float32)
    values[1, 2, 3] = 0
    valid = normalize_in_place(values, scene, metadata, float_source=False)
    assert valid.sum() == 23 and not valid[1, 2]
    assert np.all(values[valid] == 1.0) and np.all(values[1, 2] == 0)
