"""The worker's forward pass: windows staged once into a reused, aligned buffer that the model reads in place."""

from __future__ import annotations

import threading

import numpy as np

from geoseg_batch.infer.predictor import Predictor, _Staging
from geoseg_batch.model.bundle import load_bundle

from tests.helpers import make_bundle


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


def test_a_bfloat16_run_is_registered_apart_and_stays_close_to_float32(tmp_path, client):
    import json

    import xarray as xr

    from geoseg_batch import predict_scene

    from tests.helpers import write_scene

    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "s.tif", (90, 70))
    runs = {precision: predict_scene(scene, bundle, tmp_path / precision, tile=32, float_output=True,
                                     precision=precision, client=client) for precision in ("float32", "bfloat16")}
    stores = {k: xr.open_zarr(run.outputs[0]["zarr"]) for k, run in runs.items()}
    full, half = (stores[k]["probabilities"].values for k in ("float32", "bfloat16"))
    assert np.array_equal(np.isnan(full), np.isnan(half))
    assert 0 < np.nanmax(np.abs(full - half)) <= 0.05
    manifest = json.loads((tmp_path / "bfloat16" / "manifest.json").read_text())
    assert manifest["config"]["precision"] == "bfloat16"
    plugins = next(iter(client.run(lambda dask_worker: list(dask_worker.plugins)).values()))
    loaded = {name.rsplit("-", 1)[-1] for name in plugins if name.startswith("geoseg-model-")}
    assert loaded >= {"float32", "bfloat16"}  # one model per precision on each worker, not one overwriting the other
