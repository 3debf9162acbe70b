"""The worker's forward pass: windows staged once into a reused, aligned buffer that the model reads in place."""

from __future__ import annotations

import threading

import numpy as np

from geoseg_batch.infer.predictor import Predictor, _Staging
from geoseg_batch.model.bundle import load_bundle

from .conftest import make_bundle


def test_windows_views_and_arrays_give_the_model_s_probabilities(tmp_path):
    bundle = load_bundle(make_bundle(tmp_path / "m.keras", bands=3, depth=2, base_filters=4))
    predictor = Predictor(bundle)
    block = np.random.default_rng(0).normal(0, 1, (80, 150, 3)).astype(np.float32)
    windows = [block[8:72, 0:64], block[8:72, 70:134]]  # views, not contiguous
    expected = np.asarray(bundle.model(np.stack(windows), training=False))
    first = predictor.probabilities(windows)
    assert np.abs(first - expected).max() <= 1e-5
    kept = first.copy()
    other = predictor.probabilities(np.stack(windows)[::-1] * 0.5)  # same buffer, new content
    assert np.array_equal(first, kept)  # an earlier result does not share the input buffer
    assert np.abs(other - np.asarray(bundle.model(np.stack(windows)[::-1] * 0.5, training=False))).max() <= 1e-5
    bigger = predictor.probabilities([block[:64, :128]] * 3)  # the buffer grows
    assert bigger.shape == (3, 64, 128, expected.shape[-1])
    assert np.abs(bigger[2] - np.asarray(bundle.model(block[None, :64, :128], training=False))[0]).max() <= 1e-5


def test_staging_is_aligned_reused_and_per_thread():
    staging = _Staging()
    windows = [np.full((5, 7, 3), k, np.float64) for k in range(2)]  # cast to float32 on the way in
    staged = staging.batch(windows)
    assert staged.dtype == np.float32 and staged.shape == (2, 5, 7, 3) and staged.flags.c_contiguous
    assert staged.ctypes.data % _Staging.ALIGN == 0
    assert np.array_equal(staged[1], windows[1])
    again = staging.batch(windows[:1])
    assert np.shares_memory(again, staged)  # no new allocation for a batch that fits
    other: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: other.append(staging.batch(windows)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], staged)  # each worker thread stages into its own buffer
