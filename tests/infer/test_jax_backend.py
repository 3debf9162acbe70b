"""Inference under Keras' JAX backend, in processes where TensorFlow cannot be imported (a GPU machine without TF).

The bundle is trained under TensorFlow (this test process); the JAX side runs in subprocesses started with
``KERAS_BACKEND=jax`` and a ``sitecustomize`` that blocks ``import tensorflow`` (inherited by the embedded
cluster's worker processes), through the product code a worker runs: :class:`Predictor`, or a whole
``geoseg-batch predict`` on a LocalCluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geoseg_batch.infer.predictor import Predictor
from geoseg_batch.model.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]
FLOAT32_TOLERANCE = 1e-4
BFLOAT16_TOLERANCE = 0.05  # bfloat16 keeps 8 bits of mantissa: XLA and TF round in different places

_PREDICT_WINDOWS = """
import sys
import numpy as np
import keras
from geoseg_batch.infer.predictor import Predictor
from geoseg_batch.model.bundle import load_bundle

assert keras.backend.backend() == "jax", keras.backend.backend()
bundle = load_bundle(sys.argv[1])
windows = np.load(sys.argv[2])
for precision in ("float32", "bfloat16"):
    np.save(f"{sys.argv[3]}_{precision}.npy", Predictor(bundle, precision).probabilities(list(windows)))
assert sys.modules["tensorflow"] is None  # nothing got TensorFlow in
"""


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process tree on Keras' JAX backend in which ``import tensorflow`` fails."""
    site = tmp_path_factory.mktemp("no_tensorflow")
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None  # import fails\n")
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3",
            "JAX_COMPILATION_CACHE_DIR": str(site / "jax_cache")}  # not the user's cache


def _scene_windows(bands: int, normalize) -> np.ndarray:
    """Two normalized windows of a synthetic scene (rows and cols multiples of the tiny model's 2**depth)."""
    from geoseg_batch.data.synthetic import render_window, scene_layout

    layout = scene_layout(7, 160, 160, bands)
    return np.stack([np.nan_to_num(normalize(render_window(layout, row, col, 64, 96)[0]))
                     for row, col in ((0, 0), (80, 48))])


def test_jax_backend_gives_tensorflow_s_probabilities_without_tensorflow(tiny_bundle, tmp_path, without_tensorflow):
    bundle = load_bundle(tiny_bundle)
    windows = _scene_windows(bundle.metadata.bands, bundle.metadata.normalize)
    np.save(tmp_path / "windows.npy", windows)
    completed = subprocess.run([sys.executable, "-c", _PREDICT_WINDOWS, str(tiny_bundle), str(tmp_path / "windows.npy"),
                                str(tmp_path / "jax")], env=without_tensorflow, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    here = {p: Predictor(bundle, p).probabilities(list(windows)) for p in ("float32", "bfloat16")}
    there = {p: np.load(tmp_path / f"jax_{p}.npy") for p in ("float32", "bfloat16")}
    assert there["float32"].shape == here["float32"].shape == (2, 64, 96, 1)
    assert 0.01 < float(here["float32"].std())  # the trained model's probabilities vary over the scene
    assert np.abs(there["float32"] - here["float32"]).max() <= FLOAT32_TOLERANCE
    assert np.abs(there["bfloat16"] - here["bfloat16"]).max() <= BFLOAT16_TOLERANCE
    assert np.abs(there["bfloat16"] - there["float32"]).max() <= BFLOAT16_TOLERANCE


def test_predict_on_jax_workers_writes_tensorflow_s_probabilities(tiny_bundle, tmp_path, without_tensorflow, client):
    import xarray as xr

    from geoseg_batch import predict_scene
    from geoseg_batch.data.synthetic import scene_layout, write_scene

    scene = tmp_path / "scene.tif"
    # 3 x 2 tiles of 64 in two window shapes (a shape is one XLA compilation per worker; 200 x 136 had twelve)
    write_scene(scene, tmp_path / "truth.tif", scene_layout(3, 192, 128, 14), "EPSG:32633")
    here = predict_scene(scene, tiny_bundle, tmp_path / "tf", tile=64, float_output=True, cog=False, client=client)
    command = [sys.executable, "-m", "geoseg_batch.cli", "--quiet", "predict", str(scene), "--model", str(tiny_bundle),
               "--out", str(tmp_path / "jax"), "--tile", "64", "--float", "--no-cog", "--workers", "2"]
    completed = subprocess.run(command, env=without_tensorflow, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    manifest = json.loads((tmp_path / "jax" / "manifest.json").read_text())
    tf_store = xr.open_zarr(here.outputs[0]["zarr"])["probabilities"].values
    jax_store = xr.open_zarr(tmp_path / "jax" / manifest["outputs"][0]["zarr"])["probabilities"].values
    assert tf_store.shape == jax_store.shape == (1, 192, 128)
    assert np.array_equal(np.isnan(jax_store), np.isnan(tf_store)) and np.isfinite(tf_store).mean() > 0.5  # nodata
    assert np.nanmax(np.abs(jax_store - tf_store)) <= FLOAT32_TOLERANCE
