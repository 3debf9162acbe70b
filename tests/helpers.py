"""Helpers shared by the test modules: tiny bundles, scenes, one whole-scene pass, the one local cluster.

Imported as ``from tests.helpers import ...``; fixtures live in the conftest files and build on these.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_TRAIN = {"epochs": 2, "depth": 2, "base_filters": 4, "batch_size": 16, "seed": 0, "patience": 0}  # tiny_run's
# What the F1 tests train (learned_unet; the attention U-Net alike). Test F1 after 10 epochs at lr 2e-3, seeds 0..2:
# U-Net 0.946, 0.949, 0.913 (at the default 1e-3 after 12 epochs: 0.934, 0.918, 0.848), on two workers 0.960, 0.951,
# 0.834; attention U-Net 0.871, 0.965, 0.904. The tests train at seed 0 (deterministic).
LEARN = {"depth": 3, "base_filters": 8, "batch_size": 16, "seed": 0, "learning_rate": 2e-3}
LEARN_EPOCHS = 10


@contextlib.contextmanager
def local_client(workers: int, processes: bool, threads_per_worker: int = 1) -> Iterator[Any]:
    """A Client on a LocalCluster (``threads_per_worker`` threads per worker), without a dashboard."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=processes,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def make_bundle(path: Path, model_type: str = "unet", bands: int = 3, depth: int = 3, base_filters: int = 4,
                classes: int = 2, seed: int = 0, resolution_m: float | None = None,
                band_names: tuple[str, ...] | None = None) -> Path:
    """A bundle around an untrained model with random BN statistics (so BN is not the identity); its bands are
    named ``band_names`` (default b1, b2, ...)."""
    import keras

    from geoseg_batch.model.bundle import BundleMetadata, save_bundle
    from geoseg_batch.model.geometry import model_geometry
    from geoseg_batch.model.unet import build_model

    model = build_model(model_type, bands=bands, classes=classes, depth=depth, base_filters=base_filters, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    geometry = model_geometry(model)
    metadata = BundleMetadata(
        model_type=model_type, band_names=band_names or tuple(f"b{i + 1}" for i in range(bands)),
        classes=("background", "landslide") if classes == 2 else tuple(f"c{i}" for i in range(classes)),
        threshold=0.5, input_size=(64, 64), size_multiple=geometry.size_multiple,
        receptive_radius=geometry.receptive_radius,
        normalization={"mean": [100.0] * bands, "std": [50.0] * bands, "min": [0.0] * bands, "max": [255.0] * bands},
        architecture={"depth": depth, "base_filters": base_filters}, resolution_m=resolution_m,
    )
    return save_bundle(model, metadata, path)


def write_scene(path: Path, shape: tuple[int, int], bands: int = 3, crs: str = "EPSG:32633", dtype: str = "uint8",
                nodata: float | None = None, seed: int = 0, transform=None, named: bool = True) -> Path:
    """A smooth-ish random scene (so predictions vary spatially) as a tiled GeoTIFF."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    base = rng.normal(0, 1, (bands, rows // 8 + 2, cols // 8 + 2))
    smooth = np.kron(base, np.ones((8, 8)))[:, :rows, :cols] * 40 + 100 + rng.normal(0, 10, (bands, rows, cols))
    data = np.clip(smooth, 1, 254).astype(dtype)
    transform = transform or (from_origin(500000, 5200000, 10, 10) if crs != "EPSG:4326"
                              else from_origin(14.0, 47.0, 0.0001, 0.0001))
    with rasterio.open(path, "w", driver="GTiff", height=rows, width=cols, count=bands, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate") as dst:
        dst.write(data)
        if named:
            dst.descriptions = tuple(f"b{i + 1}" for i in range(bands))
    return path


def whole_scene_pass(bundle: Path, scene: Path, resampled=None) -> np.ndarray:
    """Probabilities (rows, cols, channels) of ONE forward pass over the scene zero-padded (normalized) to 2**depth.

    ``resampled`` (a :class:`~geoseg_batch.geo.scene.Resampled` grid): the whole scene read through it.
    """
    import contextlib

    from geoseg_batch.geo.grid import round_up
    from geoseg_batch.model.bundle import load_bundle

    loaded = load_bundle(bundle)
    with rasterio.open(scene) as src, (resampled.warped(src, src.nodata) if resampled is not None
                                       else contextlib.nullcontext(src)) as source:
        raw = np.moveaxis(source.read(), 0, -1).astype(np.float32)
    normalized = loaded.metadata.normalize(raw)
    m = loaded.metadata.size_multiple
    rows, cols = normalized.shape[:2]
    padded = np.zeros((round_up(rows, m), round_up(cols, m), normalized.shape[-1]), np.float32)
    padded[:rows, :cols] = normalized
    return np.asarray(loaded.model(padded[None], training=False))[0, :rows, :cols]


def stop_process_groups(processes: list[subprocess.Popen]) -> None:
    """Stop ``processes`` (each its own process group): SIGTERM, then SIGKILL for any still running after 20 s."""
    for process in processes[::-1]:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def bench_usage_error(tmp_path: Path, capsys: Any, args: list[str]) -> str:
    """The last stderr line of ``geoseg-batch bench predict --json B ARGS``, asserted to be an argparse usage error
    (exit 2) that wrote no JSON."""
    import pytest

    from geoseg_batch.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "predict", "--json", str(tmp_path / "b.json"), *args])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2, line
    assert not (tmp_path / "b.json").exists()
    return line
