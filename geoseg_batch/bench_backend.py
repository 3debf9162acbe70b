"""``bench predict --backend jax``: predict under Keras' JAX backend and under TensorFlow, side by side in one run.

Each side is a process tree started with ``KERAS_BACKEND`` set to it (the backend is chosen when
Keras is first imported; the embedded cluster's workers inherit it): ``raw`` (the model alone on
pre-cut tiles, :func:`geoseg_batch.bench._predict_worker`) and ``pipeline`` (``geoseg-batch
predict`` end to end on a LocalCluster), over ``repeats`` rounds whose side order alternates, so
both see the same machine. The figures are each side's medians, the ratio of the pipelines, and
the largest difference between the two sides' probability maps (first round; as stored: without
``--float``, in steps of 1/250, so a pixel next to a rounding boundary differs by 0.004). ``tiles`` is the
tiles phase alone (``setup`` holds the workers' start-up, the bundle's loading and, on JAX, its compilations: cached across runs, see
:func:`geoseg_batch.runtime.configure_xla`). Where TensorFlow is
not installed (a GPU machine with JAX only) the JAX side runs alone.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from geoseg_batch.bench import RAW_TILE, _bench_bundle, _bench_scene, _in_subprocess, _pipeline_run
from geoseg_batch.errors import ConfigError
from geoseg_batch.io.publish import write_json

BACKENDS = ("tensorflow", "jax")


def bench_backends(json_path: str | Path, backend: str = "jax", megapixels: float = 4.0, tile: int | None = None,
                   stitch: str = "blend", bands: int = 14, depth: int = 4, base_filters: int = 16,
                   batch_size: int = 1, workers: int | None = None, precision: str = "float32", repeats: int = 3,
                   raw_tiles: int = 4) -> dict[str, Any]:
    """Raw and pipeline Mpx/s under ``backend`` and under TensorFlow (medians of ``repeats`` rounds); the figures,
    also written to ``json_path``."""
    sides = _sides(backend, repeats)
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-backend-") as tmp:
        root = Path(tmp)
        if "tensorflow" not in sides:  # this process builds the bundle: on JAX where TF is missing (before Keras loads)
            os.environ.setdefault("KERAS_BACKEND", backend)
        bundle = _bench_bundle(root / "model.keras", bands, depth, base_filters)
        scene = _bench_scene(root / "scene.tif", megapixels, bands, seed=5)
        raw_args = {"bundle": str(bundle), "scene": str(scene), "tile": tile or RAW_TILE, "batch_size": batch_size,
                    "raw_tiles": raw_tiles, "mode": "raw", "precision": precision}
        runs, maps = [], {}
        for round_number in range(repeats):
            for side in sides if round_number % 2 == 0 else sides[::-1]:
                env = {**os.environ, "KERAS_BACKEND": side}
                out = root / f"{side}_{round_number}"
                run = _pipeline_run(scene, bundle, out, tile, stitch, batch_size, workers, precision, env=env)
                raw = _in_subprocess("predict", raw_args, env=env)
                summary = run["summary"]
                runs.append({"side": side, "round": round_number, "mpx_per_s": summary["mpx_per_s"],
                             "end_to_end_mpx_per_s": run["mpx_per_s"], "raw_mpx_per_s": raw["mpx_per_s"],
                             "tiles_mpx_per_s": summary["megapixels"] / summary["phases"]["tiles_s"],
                             "setup_s": summary["phases"]["setup_s"], "overlap_fraction": run["overlap_fraction"],
                             "peak_rss_bytes": run["peak_rss_bytes"]})
                if round_number == 0:
                    maps[side] = _probabilities(out)
                shutil.rmtree(out)
        figures: dict[str, Any] = {"backends": list(sides), "megapixels": _megapixels(scene),
                                   "tile": tile, "stitch": stitch, "bands": bands, "depth": depth,
                                   "base_filters": base_filters, "batch_size": batch_size, "precision": precision,
                                   "repeats": repeats, "raw_tiles": raw_tiles, **_medians(runs, sides, maps),
                                   "runs": runs}
    write_json(json_path, figures)
    return figures


def _sides(backend: str, repeats: int) -> tuple[str, ...]:
    """The backends measured: ``backend``, then TensorFlow where it is installed (and is not ``backend``)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: got {backend!r}; expected one of {BACKENDS}")
    if repeats < 1:
        raise ConfigError(f"--repeats: got {repeats}; expected at least 1 (rounds of one run per backend)")
    has_tensorflow = importlib.util.find_spec("tensorflow") is not None
    if backend == "tensorflow" and not has_tensorflow:
        raise ConfigError("--backend tensorflow: TensorFlow is not installed here; pip install tensorflow-cpu, "
                          "or measure --backend jax")
    return (backend,) if backend == "tensorflow" or not has_tensorflow else (backend, "tensorflow")


def _megapixels(scene: Path) -> float:
    """The scene's size in Mpx."""
    import rasterio

    with rasterio.open(scene) as src:
        return round(src.width * src.height / 1e6, 3)


def _probabilities(out: Path) -> Any:
    """The probabilities of the one zarr store a predict wrote under ``out``: float64, NaN where nodata (a uint8
    store's values are steps of 1/PROBABILITY_SCALE)."""
    import numpy as np
    import zarr

    from geoseg_batch.io.zarr_store import PROBABILITY_NODATA_UINT8, PROBABILITY_SCALE

    (store,) = out.glob("*.zarr")
    stored = zarr.open_group(str(store), mode="r")["probabilities"][...]
    if stored.dtype != np.uint8:
        return stored.astype(np.float64)
    return np.where(stored == PROBABILITY_NODATA_UINT8, np.nan, stored / PROBABILITY_SCALE)


def _medians(runs: list[dict[str, Any]], sides: tuple[str, ...], maps: dict[str, Any]) -> dict[str, Any]:
    """Each side's median speeds and pipeline/raw (counting the halo), the first side's pipeline over
    TensorFlow's, and the largest probability difference between the sides' maps."""
    import numpy as np

    figures: dict[str, Any] = {}
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        for key in ("mpx_per_s", "end_to_end_mpx_per_s", "tiles_mpx_per_s", "setup_s", "raw_mpx_per_s",
                    "peak_rss_bytes"):
            figures[f"{side}_{key}"] = statistics.median(r[key] for r in mine)
        figures[f"{side}_pipeline_over_raw_with_halo"] = (figures[f"{side}_mpx_per_s"]
                                                          * (1 + mine[0]["overlap_fraction"])
                                                          / figures[f"{side}_raw_mpx_per_s"])
    if len(sides) == 2:
        first, other = sides
        figures[f"{first}_over_{other}"] = figures[f"{first}_mpx_per_s"] / figures[f"{other}_mpx_per_s"]
        for key in ("tiles_mpx_per_s", "raw_mpx_per_s"):
            figures[f"{first}_over_{other}_{key.split('_')[0]}"] = figures[f"{first}_{key}"] / figures[f"{other}_{key}"]
        figures["probabilities_max_abs_difference"] = float(np.nanmax(np.abs(maps[first] - maps[other])))
    return figures
