"""Benchmarks that print figures (never timed tests).

``bench predict``: on one synthetic scene (>= 64 Mpx by default) and one model, three ways
to get a probability map, each in its own process tree: ``raw``, the model alone on
pre-cut in-memory tiles of the same size and batch (the ceiling; the median of three passes); ``naive``, the notebook
way (whole scene read into NumPy, ``model.predict`` tile by tile, NumPy stitch, one
GeoTIFF written); ``pipeline``, ``geoseg-batch predict`` end to end to zarr + COGs on an
embedded LocalCluster. Speeds are output pixels per second; ``overlap_fraction`` is the
extra pixels the pipeline's model computed per output pixel (its halo). With ``scaling``,
the pipeline also runs on a scene of a quarter of the pixels, for the memory-flat figure.
``precision`` is that of ``raw`` and ``pipeline``; ``naive`` stays the notebook's float32.

``bench train``: training throughput (chips/s) and peak RSS when the same model, batch
size and transforms are fed (a) from HDF5 shards streamed by :func:`chip_dataset` and (b)
from NumPy arrays held in memory (:func:`array_dataset`, the notebook way). Every
measurement runs in a fresh subprocess, so its peak RSS is its own; the two modes
alternate over ``repeats`` rounds and medians are reported, because this machine is
shared and noisy. With ``scaling``, one epoch is also streamed over N and over 4N shards
to show that memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from geoseg_batch.io.publish import write_json


def _worker(args: dict[str, Any]) -> dict[str, Any]:
    """Runs inside the subprocess: build model + pipeline, time steps, report chips/s and peak RSS."""
    import resource

    from geoseg_batch.runtime import configure_tensorflow

    configure_tensorflow()
    import keras
    import numpy as np

    from geoseg_batch.data.chips import iter_chips, open_chips
    from geoseg_batch.data.pipeline import Transform, array_dataset, chip_dataset
    from geoseg_batch.data.shards import STATS_NAME, beside
    from geoseg_batch.data.stats import load_stats
    from geoseg_batch.model.unet import build_model
    from geoseg_batch.training.loop import TrainLoop

    collection = open_chips(args["data"])  # a shard directory, or its prefix in object storage (bench_train_remote)
    stats = load_stats(beside(collection.root, STATS_NAME), collection.cloud)
    transform = Transform.from_stats(stats, augment=True, jitter=0.05)
    batch = args["batch_size"]
    if args["mode"] == "numpy":
        pairs = list(iter_chips(collection))
        images, masks = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        dataset = array_dataset(images, masks, transform, batch_size=batch, shuffle=True)
    else:
        dataset = chip_dataset(collection, transform, batch_size=batch, shuffle=True)
    model = build_model("unet", bands=collection.bands, depth=args["depth"], base_filters=args["base_filters"], seed=0)
    optimizer = keras.optimizers.Adam(1e-3)
    loop = TrainLoop(model, optimizer, "bce_dice", 2, 0.5)
    if args.get("epoch"):
        started, chips = time.perf_counter(), 0
        for x, y in dataset:
            loop.train_step(x, y)
            chips += int(x.shape[0])
    else:
        stream = iter(dataset.repeat())
        for _ in range(args["warmup"]):
            loop.train_step(*next(stream))
        started = time.perf_counter()
        for _ in range(args["steps"]):
            loss, _ = loop.train_step(*next(stream))
        float(loss)  # wait for the last step
        chips = args["steps"] * batch
    seconds = time.perf_counter() - started
    return {"mode": args["mode"], "chips": chips, "seconds": seconds, "chips_per_s": chips / seconds,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _in_subprocess(kind: str, args: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one ``kind`` ("train" or "predict") measurement in a fresh process (environment ``env``, default this
    one's); its figures (its peak RSS is its own)."""
    completed = subprocess.run([sys.executable, "-m", "geoseg_batch.bench", kind, json.dumps(args)],
                               capture_output=True, text=True, check=False, env=env)
    if completed.returncode:
        raise RuntimeError(f"benchmark worker failed: {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _make_shards(root: Path, chips: int, size: int, bands: int, chips_per_shard: int, seed: int) -> Path:
    from geoseg_batch.data.pack import pack_shards
    from geoseg_batch.data.synthetic import write_l4s_chips

    source = write_l4s_chips(root / f"chips_{chips}", chips=chips, bands=bands, size=size, seed=seed)
    return pack_shards(source, root / f"shards_{chips}", chips_per_shard=chips_per_shard).out


def bench_train(json_path: str | Path, chips: int = 256, size: int = 128, bands: int = 14, batch_size: int = 8,
                base_filters: int = 16, depth: int = 4, steps: int = 60, repeats: int = 3,
                scaling: bool = False, workers: int | None = None) -> dict[str, Any]:
    """Shards vs in-memory chips/s and peak RSS (medians of ``repeats``); optionally RSS scaling N vs 4N shards.

    With ``workers``: instead, distributed training chips/s on an embedded cluster of 1 and of
    ``workers`` Dask workers (one training process each), same global batch.
    """
    if workers:
        return _bench_train_workers(json_path, chips, size, bands, batch_size, base_filters, depth, workers)
    common = {"batch_size": batch_size, "base_filters": base_filters, "depth": depth, "steps": steps, "warmup": 5}
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as tmp:
        shards = _make_shards(Path(tmp), chips, size, bands, 32, seed=1)
        runs = []
        for round_number in range(repeats):
            modes = ("numpy", "shards") if round_number % 2 == 0 else ("shards", "numpy")
            runs.extend(_in_subprocess("train", {**common, "mode": mode, "data": str(shards)}) for mode in modes)
        figures: dict[str, Any] = {"chips": chips, "chip_size": size, "bands": bands, **common, "repeats": repeats}
        for mode in ("numpy", "shards"):
            mine = [r for r in runs if r["mode"] == mode]
            figures[f"{mode}_chips_per_s"] = statistics.median(r["chips_per_s"] for r in mine)
            figures[f"{mode}_peak_rss_bytes"] = statistics.median(r["peak_rss_bytes"] for r in mine)
        figures["shards_over_numpy"] = figures["shards_chips_per_s"] / figures["numpy_chips_per_s"]
        rounds = [{r["mode"]: r["chips_per_s"] for r in runs[i:i + 2]} for i in range(0, len(runs), 2)]
        figures["ratios_per_round"] = [r["shards"] / r["numpy"] for r in rounds]
        if scaling:
            large = _make_shards(Path(tmp), chips * 4, size, bands, 32, seed=2)
            epochs = [_in_subprocess("train", {**common, "mode": "shards", "data": str(path), "epoch": True})
                      for _ in range(max(1, repeats // 2)) for path in (shards, large)]
            small_rss = statistics.median(e["peak_rss_bytes"] for e in epochs[0::2])
            large_rss = statistics.median(e["peak_rss_bytes"] for e in epochs[1::2])
            figures["scaling"] = {"shards_small": chips // 32, "shards_large": chips * 4 // 32,
                                  "epoch_peak_rss_small_bytes": small_rss, "epoch_peak_rss_large_bytes": large_rss,
                                  "growth": large_rss / small_rss - 1}
        figures["runs"] = runs
    write_json(json_path, figures)
    return figures


RAW_PASSES = 3


def _bench_train_workers(json_path: str | Path, chips: int, size: int, bands: int, batch_size: int,
                         base_filters: int, depth: int, workers: int, epochs: int = 4) -> dict[str, Any]:
    """Training chips/s (median over epochs after the first) with 1 and with ``workers`` ranks."""
    import csv

    from geoseg_batch.jobfile import parse_job
    from geoseg_batch.runs import run_job

    figures: dict[str, Any] = {"chips": chips, "chip_size": size, "bands": bands, "batch_size": batch_size,
                               "base_filters": base_filters, "depth": depth, "epochs": epochs}
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as tmp:
        shards = _make_shards(Path(tmp), chips, size, bands, max(1, chips // (4 * workers)), seed=1)
        for count in sorted({1, workers}):
            out = Path(tmp) / f"run_{count}"
            job = parse_job({"kind": "train", "out": str(out), "data": {"path": str(shards)},
                             "model": {"depth": depth, "base_filters": base_filters},
                             "train": {"epochs": epochs, "batch_size": batch_size, "patience": 0},
                             "cluster": {"workers": count}})
            result = run_job(job)
            train_chips = result.summary["chips"]["train"]
            seconds = [float(r["seconds"]) for r in csv.DictReader(open(out / "history.csv"))][1:]
            figures[f"workers_{count}_chips_per_s"] = train_chips / statistics.median(seconds)
        figures["speedup"] = figures[f"workers_{workers}_chips_per_s"] / figures["workers_1_chips_per_s"]
    write_json(json_path, figures)
    return figures


RAW_TILE = 512
"""The side of the pre-cut tiles ``raw`` runs the model on when no ``tile`` is given (predict's own default, the auto
tile, depends on the stitch mode; the model's speed per pixel does not depend on the tile)."""


def _predict_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Runs inside a subprocess: the ``raw`` or ``naive`` way of predicting a scene."""
    import resource

    from geoseg_batch.runtime import configure_backend

    configure_backend()  # TensorFlow's threads, or none to set under KERAS_BACKEND=jax
    import numpy as np
    import rasterio

    from geoseg_batch.infer.predictor import Predictor
    from geoseg_batch.model.bundle import load_bundle

    bundle = load_bundle(args["bundle"])
    tile, batch = args["tile"], args["batch_size"]
    with rasterio.open(args["scene"]) as src:
        profile = src.profile
        if args["mode"] == "raw":  # pre-cut tiles in memory; only the forward passes are timed
            per_row = src.width // tile
            count = min(args["raw_tiles"], per_row * (src.height // tile))  # whole tiles inside the scene
            tiles = [bundle.metadata.normalize(np.moveaxis(src.read(window=rasterio.windows.Window(
                (k % per_row) * tile, (k // per_row) * tile, tile, tile)), 0, -1)) for k in range(count)]
            tiles = [np.nan_to_num(t) for t in tiles]
            predictor = Predictor(bundle, args["precision"])
            predictor.probabilities(tiles[:batch])  # trace once
            passes = []
            for _ in range(RAW_PASSES):  # the median pass: one short pass is at the mercy of a noisy machine
                started = time.perf_counter()
                for k in range(0, count, batch):
                    predictor.probabilities(tiles[k:k + batch])
                passes.append(time.perf_counter() - started)
            seconds = statistics.median(passes)
            pixels = count * tile * tile
        else:  # the notebook way, timed end to end
            started = time.perf_counter()
            scene = np.moveaxis(src.read(), 0, -1)
    if args["mode"] == "naive":
        rows, cols = scene.shape[:2]
        normalized = np.nan_to_num(bundle.metadata.normalize(scene))
        padded = np.zeros((-(-rows // tile) * tile, -(-cols // tile) * tile, normalized.shape[-1]), np.float32)
        padded[:rows, :cols] = normalized
        out = np.zeros(padded.shape[:2], np.float32)
        for r in range(0, padded.shape[0], tile):
            for c in range(0, padded.shape[1], tile):
                out[r:r + tile, c:c + tile] = bundle.model.predict(padded[None, r:r + tile, c:c + tile], verbose=0)[0, ..., 0]
        profile.update(count=1, dtype="uint8", nodata=255, compress="deflate", tiled=True)
        with rasterio.open(args["out"], "w", **profile) as dst:
            dst.write(np.round(out[:rows, :cols] * 250).astype(np.uint8), 1)
        seconds = time.perf_counter() - started
        pixels = rows * cols
    return {"mode": args["mode"], "seconds": seconds, "mpx_per_s": pixels / 1e6 / seconds,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _bench_bundle(path: Path, bands: int, depth: int, base_filters: int) -> Path:
    """An untrained U-Net bundle (speed does not depend on the weights) normalized for synthetic scenes."""
    import numpy as np

    from geoseg_batch.data.synthetic import render_window, scene_layout
    from geoseg_batch.model.bundle import BundleMetadata, save_bundle
    from geoseg_batch.model.geometry import model_geometry
    from geoseg_batch.model.unet import build_model

    sample, _ = render_window(scene_layout(0, 256, 256, bands), 0, 0, 256, 256)
    flat = sample.reshape(-1, bands).astype(np.float64)
    model = build_model("unet", bands=bands, depth=depth, base_filters=base_filters, seed=0)
    geometry = model_geometry(model)
    metadata = BundleMetadata(
        model_type="unet", band_names=tuple(f"b{i + 1}" for i in range(bands)), classes=("background", "landslide"),
        threshold=0.5, input_size=(128, 128), size_multiple=geometry.size_multiple,
        receptive_radius=geometry.receptive_radius,
        normalization={"mean": list(flat.mean(0)), "std": list(flat.std(0)), "min": list(flat.min(0)),
                       "max": list(flat.max(0))},
        architecture={"depth": depth, "base_filters": base_filters},
    )
    return save_bundle(model, metadata, path)


def _bench_scene(path: Path, megapixels: float, bands: int, seed: int) -> Path:
    from geoseg_batch.data.synthetic import scene_layout, write_scene

    side = int(round((megapixels * 1e6) ** 0.5 / 64)) * 64
    write_scene(path, path.with_name(path.stem + "_truth.tif"), scene_layout(seed, side, side, bands), "EPSG:32633")
    return path


def _pipeline_run(scene: Path | str | list[Path], bundle: Path, out: Path, tile: int | None, stitch: str,
                  batch_size: int, workers: int | None, precision: str, env: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    """``geoseg-batch predict`` of ``scene`` (a path or URL; a list: those scenes in one run) in a subprocess
    (environment ``env``, default this one's; ``tile`` None: predict's own default, the auto tile): its speed (end to
    end; ``summary["mpx_per_s"]`` is the run's own), peak RSS and manifest summary."""
    scenes = [str(s) for s in scene] if isinstance(scene, list) else [str(scene)]
    command = [sys.executable, "-m", "geoseg_batch.cli", "--quiet", "predict", *scenes, "--model", str(bundle),
               "--out", str(out), "--stitch", stitch, "--batch-size", str(batch_size), "--precision", precision]
    if tile:
        command += ["--tile", str(tile)]
    if workers:
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    if completed.returncode:
        raise RuntimeError(f"pipeline run failed: {completed.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    return {"mode": "pipeline", "seconds": seconds, "mpx_per_s": summary["megapixels"] / seconds,
            "peak_rss_bytes": summary["peak_tree_rss_bytes"], "overlap_fraction": summary["overlap_fraction"],
            "summary": summary}


def bench_predict(json_path: str | Path, megapixels: float = 64.0, tile: int | None = None, stitch: str = "blend",
                  bands: int = 14, depth: int = 4, base_filters: int = 16, batch_size: int = 1,
                  workers: int | None = None, raw_tiles: int = 24, scaling: bool = False,
                  precision: str = "float32") -> dict[str, Any]:
    """raw vs naive vs pipeline on one synthetic scene; see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-predict-") as tmp:
        root = Path(tmp)
        bundle = _bench_bundle(root / "model.keras", bands, depth, base_filters)
        scene = _bench_scene(root / "scene.tif", megapixels, bands, seed=5)
        common = {"bundle": str(bundle), "scene": str(scene), "tile": tile or RAW_TILE, "batch_size": batch_size,
                  "raw_tiles": raw_tiles}
        raw = _in_subprocess("predict", {**common, "mode": "raw", "precision": precision})
        naive = _in_subprocess("predict", {**common, "mode": "naive", "out": str(root / "naive.tif")})
        pipeline = _pipeline_run(scene, bundle, root / "pipeline", tile, stitch, batch_size, workers, precision)
        import rasterio

        with rasterio.open(scene) as src:
            scene_mpx = src.width * src.height / 1e6
        figures: dict[str, Any] = {
            "megapixels": round(scene_mpx, 3), "tile": pipeline["summary"]["tile"], "stitch": stitch, "bands": bands,
            "depth": depth, "base_filters": base_filters, "batch_size": batch_size, "precision": precision,
            "raw_mpx_per_s": raw["mpx_per_s"], "naive_mpx_per_s": naive["mpx_per_s"],
            "pipeline_mpx_per_s": pipeline["mpx_per_s"], "overlap_fraction": pipeline["overlap_fraction"],
            "naive_peak_rss_bytes": naive["peak_rss_bytes"], "pipeline_peak_rss_bytes": pipeline["peak_rss_bytes"],
        }
        figures["pipeline_over_raw_with_halo"] = (figures["pipeline_mpx_per_s"] * (1 + figures["overlap_fraction"])
                                                  / figures["raw_mpx_per_s"])
        figures["pipeline_over_naive"] = figures["pipeline_mpx_per_s"] / figures["naive_mpx_per_s"]
        figures["pipeline_rss_over_naive"] = figures["pipeline_peak_rss_bytes"] / figures["naive_peak_rss_bytes"]
        figures["pipeline_summary"] = pipeline["summary"]
        if scaling:
            small = _pipeline_run(_bench_scene(root / "quarter.tif", megapixels / 4, bands, seed=6), bundle,
                                  root / "pipeline_quarter", tile, stitch, batch_size, workers, precision)
            figures["scaling"] = memory_scaling(small, pipeline)
    write_json(json_path, figures)
    return figures


def memory_scaling(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """How the peak memory of a predict run grows with the scene: {"megapixels_small", "peak_rss_small_bytes",
    "megapixels_large", "peak_rss_large_bytes", "growth"} of two :func:`_pipeline_run` results (peak RSS of the
    run's process tree; ``growth``: large over small, less 1)."""
    return {"megapixels_small": small["summary"]["megapixels"], "peak_rss_small_bytes": small["peak_rss_bytes"],
            "megapixels_large": large["summary"]["megapixels"], "peak_rss_large_bytes": large["peak_rss_bytes"],
            "growth": large["peak_rss_bytes"] / small["peak_rss_bytes"] - 1}


def worker_exit(figures: Any) -> NoReturn:
    """Print a benchmark worker process's ``figures`` as its last stdout line and end the process at once; never
    returns. The worker holds nothing to clean up, and the interpreter's own teardown of TensorFlow takes ~2 s
    the bench would wait for (reading the worker's output to its end)."""
    print(json.dumps(figures), flush=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    workers = {"train": _worker, "predict": _predict_worker}
    worker_exit(workers[sys.argv[1]](json.loads(sys.argv[2])))
