"""run_job(job) -> result: the one place that wires the stages together.

Each job kind maps to one function here; the CLI, the Python API and ``submit`` of a
YAML job all end up in :func:`run_job`, and every result carries the path of the
``manifest.json`` it wrote.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg_batch.config import DemoJob, EvaluateJob, PredictJob, TrainJob, resolved
from geoseg_batch.data.chips import ChipCollection, open_chips
from geoseg_batch.data.stats import BandStats, compute_stats, load_stats
from geoseg_batch.io.publish import checksums, combined_digest, write_json, write_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """What a job produced: its outputs (as listed in its manifest) and summary figures."""

    kind: str
    out: Path
    manifest: Path
    outputs: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def training_stats(collection: ChipCollection, out: Path, client: Any | None = None) -> BandStats:
    """Band statistics stored beside shards, or computed with Dask (and saved in ``out``)."""
    from geoseg_batch.data.shards import STATS_NAME

    stored = collection.path / STATS_NAME if collection.path.is_dir() else collection.path.parent / STATS_NAME
    if collection.layout == "shards" and stored.exists():
        stats = load_stats(stored)
        if stats.band_names == collection.band_names:
            return stats
    stats = compute_stats(collection, client=client)
    write_json(out / STATS_NAME, stats.to_dict())
    return stats


def run_train(job: TrainJob, client: Any | None = None) -> JobResult:
    """Train one model, or every run of a sweep; writes bundles, histories and manifest.json."""
    import keras

    from geoseg_batch.runtime import configure_tensorflow
    from geoseg_batch.training.fit import fit
    from geoseg_batch.training.sweep import RESULTS_NAME, run_summary, run_sweep

    configure_tensorflow()
    started = time.perf_counter()
    collection = open_chips(job.data.path, fill_nan=job.data.fill_nan)  # validate before writing anything
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    stats = training_stats(collection, out, client)
    inputs = checksums(collection.files())
    digest = combined_digest(inputs)

    def train_one(run_job: TrainJob):
        keras.backend.clear_session()
        return fit(run_job, collection, stats, digest)

    if job.sweep is None:
        result = train_one(job)
        rows = [run_summary("", job, result)]
        summary = {"epochs": result.epochs, "resumed_from_epoch": result.resumed_from,
                   "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
                   "chips": result.chips, "test_metrics": result.test_metrics}
        outputs = [{"bundle": str(result.bundle), "history": str(result.history),
                    "curves": str(result.curves) if result.curves else None}]
    else:
        rows = run_sweep(job, train_one)
        best = max(rows, key=lambda r: r["f1"] or 0.0)
        summary = {"runs": len(rows), "best_run": best["run"], "best_f1": best["f1"],
                   "results": str(out / RESULTS_NAME)}
        outputs = [{"bundle": r["bundle"], "run": r["run"]} for r in rows]
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    manifest = write_manifest(out, command="train", outputs=outputs, summary=summary, config=resolved(job),
                              inputs=inputs)
    return JobResult("train", out, manifest, outputs, summary)


def run_evaluate(job: EvaluateJob, client: Any | None = None) -> JobResult:
    """Evaluate a bundle; writes metrics.json, PNGs and manifest.json."""
    from geoseg_batch.runtime import configure_tensorflow
    from geoseg_batch.training.evaluate import evaluate

    configure_tensorflow()
    result = evaluate(job)
    outputs = [{"metrics": str(result.metrics_path)}]
    summary = {k: result.metrics[k] for k in ("accuracy", "precision", "recall", "f1", "iou")}
    return JobResult("evaluate", result.out, result.manifest, outputs, summary)


def run_demo(job: DemoJob, client: Any | None = None) -> JobResult:
    """Synthetic chips -> shards (on Dask) -> train -> evaluate -> predict the synthetic scenes (on Dask)."""
    from geoseg_batch.cluster import connect
    from geoseg_batch.config import DataSpec
    from geoseg_batch.data.pack import pack_shards
    from geoseg_batch.data.synthetic import synth

    started = time.perf_counter()
    out = Path(job.out)
    log.info("demo: synthesizing %d chips (%dx%d, %d bands) and %d scenes in %s",
             job.chips, job.size, job.size, job.bands, job.scenes, out / "data")
    data = synth(out / "data", chips=job.chips, bands=job.bands, size=job.size, scenes=job.scenes, seed=job.seed)
    with connect(job.cluster) if client is None else contextlib.nullcontext(client) as active:
        log.info("demo: packing shards on the Dask cluster (dashboard %s)", active.dashboard_link)
        packed = pack_shards(data.chips_dir, out / "shards", chips_per_shard=64, overwrite=True, client=active)
        train = run_train(TrainJob(name="demo", out=out / "train", data=DataSpec(path=packed.out),
                                   model=job.model, train=job.train))
        bundle = Path(train.outputs[0]["bundle"])
        evaluation = run_evaluate(EvaluateJob(model=bundle, data=packed.out, out=out / "evaluate", split="test"))
        scene_scores = {}
        if data.scenes:
            log.info("demo: predicting %d georeferenced scenes tile by tile", len(data.scenes))
            predicted = run_predict(PredictJob(scenes=list(data.scenes), model=bundle, out=out / "predict",
                                               tile=job.tile, overwrite=True), active)
            scene_scores = {Path(o["scene"]).name: scene_f1(Path(o["mask_cog"]), truth)
                            for o, truth in zip(predicted.outputs, data.truths)}
    outputs = [{"bundle": str(bundle), "metrics": str(evaluation.outputs[0]["metrics"]),
                "report": str(evaluation.out), "shards": str(packed.out),
                "scenes": [str(s) for s in data.scenes], "predictions": str(out / "predict") if data.scenes else None}]
    summary = {"wall_s": round(time.perf_counter() - started, 3), "chips": job.chips,
               **{f"test_{k}": v for k, v in evaluation.summary.items()}, "scene_f1": scene_scores}
    manifest = write_manifest(out, command="demo", outputs=outputs, summary=summary, config=resolved(job),
                              inputs={})
    return JobResult("demo", out, manifest, outputs, summary)


def scene_f1(mask_path: Path, truth_path: Path) -> float:
    """Pixel F1 of a predicted class mask against a truth raster on the same grid, read block by block."""
    import rasterio

    tp = fp = fn = 0
    with rasterio.open(mask_path) as mask_src, rasterio.open(truth_path) as truth_src:
        for _, window in truth_src.block_windows(1):
            truth, mask = truth_src.read(1, window=window), mask_src.read(1, window=window)
            valid = (truth != truth_src.nodata) & (mask != mask_src.nodata)
            tp += int(((mask == 1) & (truth == 1) & valid).sum())
            fp += int(((mask == 1) & (truth == 0) & valid).sum())
            fn += int(((mask == 0) & (truth == 1) & valid).sum())
    return round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else 1.0


def run_predict(job: PredictJob, client: Any | None = None) -> JobResult:
    """Segment every scene tile by tile on the cluster; zarr + COGs per scene, published atomically.

    Everything is validated (bundle, scenes, tile size, output path) before a cluster is
    started or a file written.
    """
    from geoseg_batch.cluster import connect
    from geoseg_batch.errors import ConfigError
    from geoseg_batch.geo.grid import TileGrid, round_up
    from geoseg_batch.geo.scene import open_scene
    from geoseg_batch.infer.predictor import register_model
    from geoseg_batch.infer.segment import run_graph, segment_graph
    from geoseg_batch.io.cog import write_cog
    from geoseg_batch.io.publish import sha256_file, staged_directory
    from geoseg_batch.io.zarr_store import create_store
    from geoseg_batch.model.bundle import read_metadata
    from geoseg_batch.monitor import PeakMemory

    started = time.perf_counter()
    metadata = read_metadata(job.model)
    multiple = metadata.size_multiple
    if job.tile % multiple:
        raise ConfigError(
            f"tile size {job.tile} is not a multiple of the model's size multiple {multiple} (2**depth); "
            f"use --tile {round_up(job.tile, multiple)}"
        )
    scenes = [open_scene(p, metadata, bands=job.bands, nodata=job.nodata) for p in job.scenes]
    stems = [p.stem for p in job.scenes]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"scenes share a file name ({stems}); outputs are named after it, rename one")
    overlap = job.overlap if job.overlap is not None else metadata.receptive_radius // 2
    halo = metadata.receptive_radius if job.stitch == "exact" else overlap
    grids = [TileGrid.for_model(s.shape, job.tile, halo, multiple) for s in scenes]
    digest = f"sha256:{sha256_file(job.model)}"
    out = Path(job.out)
    outputs = []
    with staged_directory(out, overwrite=job.overwrite) as stage, PeakMemory() as memory, \
            (connect(job.cluster) if client is None else contextlib.nullcontext(client)) as active:
        ref = register_model(active, job.model, digest)
        gpu = job.gpu if job.gpu is not None else _cluster_has_gpu(active)
        graphs = []
        for number, (scene, grid, stem) in enumerate(zip(scenes, grids, stems)):
            target = create_store(stage / f"{stem}.zarr", scene.data, job.tile, metadata.classes, metadata.threshold,
                                  job.float_output, job.zarr_format)
            graphs.extend(segment_graph(scene, grid, ref, target, job.stitch, gpu=gpu, token=f"{number}-{stem}",
                                        batch_size=job.batch_size))
        log.info("predict: %d scenes, %d tiles (%s stitch, tile %d, halo %d) on %s", len(scenes),
                 sum(len(g.tiles()) for g in grids), job.stitch, job.tile, grids[0].halo, active.dashboard_link)
        tiles_started = time.perf_counter()
        records = run_graph(graphs, active)
        cogs_started = time.perf_counter()
        cogs = [active.submit(write_cog, stage / f"{stem}.zarr", variable, stage / f"{stem}_{variable}.tif", job.tile,
                              pure=False) for stem in stems for variable in ("mask", "probabilities")] if job.cog else []
        active.gather(cogs)  # all scenes' COGs side by side
        for scene, stem in zip(scenes, stems):
            entry = {"scene": str(scene.path), "zarr": str(out / f"{stem}.zarr")}
            if job.cog:
                entry.update({"mask_cog": str(out / f"{stem}_mask.tif"),
                              "probability_cog": str(out / f"{stem}_probabilities.tif")})
            outputs.append(entry)
        wall = time.perf_counter() - started
        phases = {"setup_s": round(tiles_started - started, 3), "tiles_s": round(cogs_started - tiles_started, 3),
                  "cogs_s": round(time.perf_counter() - cogs_started, 3)}
        log.info("predict: setup %.1f s, tiles %.1f s, COGs %.1f s", *phases.values())
        megapixels = sum(g.shape[0] * g.shape[1] for g in grids) / 1e6
        model_pixels = sum(r.model_pixels for r in records)
        summary = {
            "scenes": len(scenes), "megapixels": round(megapixels, 3), "tiles_total": len(records),
            "tiles_computed": sum(r.computed for r in records), "tiles_skipped": sum(not r.computed for r in records),
            "stitch": job.stitch, "tile": job.tile, "halo": grids[0].halo,
            "overlap_fraction": round(model_pixels / max(megapixels * 1e6, 1) - 1, 4),
            "wall_s": round(wall, 3), "mpx_per_s": round(megapixels / wall, 4), "phases": phases,
        }
        memory.sample()
        # Workers of an external cluster are not our children: their current memory is a lower bound.
        summary["peak_worker_rss_bytes"] = memory.peak_children_bytes or _worker_memory(active)
        summary["peak_tree_rss_bytes"] = memory.peak_tree_bytes
        manifest = write_manifest(stage, command="predict", outputs=outputs, summary=summary, config=resolved(job),
                                  inputs={**checksums([job.model]), **checksums(job.scenes)})
    return JobResult("predict", out, out / manifest.name, outputs, summary)


def _worker_memory(client: Any) -> int:
    return sum(int(w.get("metrics", {}).get("memory", 0)) for w in client.scheduler_info()["workers"].values())


def _cluster_has_gpu(client: Any) -> bool:
    return any(w.get("resources", {}).get("GPU") for w in client.scheduler_info()["workers"].values())


RUNNERS = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict, "demo": run_demo}


def run_job(job: TrainJob | EvaluateJob | PredictJob | DemoJob, client: Any | None = None) -> JobResult:
    """Run any job kind."""
    return RUNNERS[job.kind](job, client)
