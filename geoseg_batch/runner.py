"""run_job(job) -> result: the one place that wires the stages together.

Each job kind maps to one function here; the CLI, the Python API and ``submit`` of a
YAML job all end up in :func:`run_job`, and every result carries the path of the
``manifest.json`` it wrote.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg_batch.config import AnyJob, DemoJob, EvaluateJob, MosaicJob, PipelineJob, PredictJob, TrainJob, resolved
from geoseg_batch.data.chips import ChipCollection, open_chips
from geoseg_batch.data.stats import BandStats, compute_stats, load_stats
from geoseg_batch.errors import ConfigError
from geoseg_batch.io.publish import checksums, combined_digest, require_free, write_json, write_manifest

if TYPE_CHECKING:  # training imports TensorFlow; only jobs that train load it
    from geoseg_batch.training.fit import FitResult

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

    ranks: list[dict[str, Any]] = []

    def train_one(run_job: TrainJob) -> FitResult:
        if not _distributed(run_job, client):
            keras.backend.clear_session()
            return fit(run_job, collection, stats, digest)
        from geoseg_batch.cluster import connect
        from geoseg_batch.training.distributed import train_on_cluster

        with connect(run_job.cluster) if client is None else contextlib.nullcontext(client) as active:
            results, assignment = train_on_cluster(run_job, collection, stats, digest, active,
                                                   run_job.cluster.train_workers)
        for entry, rank in zip(assignment, results):
            ranks.append({**entry, "weights_sha256": rank.weights_sha256})
        return _fit_result(results[0].result)

    if job.sweep is None:
        result = train_one(job)
        rows = [run_summary("", job, result)]
        summary = {"epochs": result.epochs, "resumed_from_epoch": result.resumed_from,
                   "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
                   "chips": result.chips, "test_metrics": result.test_metrics}
        outputs = [{"bundle": str(result.bundle), "history": str(result.history),
                    "curves": str(result.curves) if result.curves else None}]
        if ranks:
            summary["workers"] = ranks
    else:
        rows = run_sweep(job, train_one)
        best = max(rows, key=lambda r: r["f1"] or 0.0)
        summary = {"runs": len(rows), "best_run": best["run"], "best_f1": best["f1"],
                   "results": str(out / RESULTS_NAME)}
        outputs = [{"bundle": r["bundle"], "run": r["run"]} for r in rows]
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    curves = [("training curves", Path(o["curves"])) for o in outputs if o.get("curves")]
    summary["report"] = str(_write_report(out, f"train: {job.name}", summary, resolved(job), curves,
                                          summary.get("test_metrics")))
    manifest = write_manifest(out, command="train", outputs=outputs, summary=summary, config=resolved(job),
                              inputs=inputs)
    return JobResult("train", out, manifest, outputs, summary)


def _distributed(job: TrainJob, client: Any | None) -> bool:
    """Train on a cluster (one rank per worker) when given one or the job names one; else in this process."""
    return client is not None or bool(job.cluster.scheduler or job.cluster.workers)


def _fit_result(payload: dict[str, Any]) -> FitResult:
    """The chief rank's FitResult, back from JSON."""
    from geoseg_batch.training.fit import FitResult

    paths = {k: Path(payload[k]) if payload.get(k) else None for k in ("out", "bundle", "history", "curves")}
    return FitResult(**{**payload, **paths})


def _write_report(out: Path, title: str, summary: dict[str, Any], config: dict[str, Any],
                  images: list[tuple[str, Path]], metrics: dict[str, Any] | None = None) -> Path:
    """``out/report.html``: the job's run report (one self-contained file)."""
    from geoseg_batch.report import write_run_report

    return write_run_report(out / "report.html", title, summary, config, images, metrics=metrics)


def run_evaluate(job: EvaluateJob, client: Any | None = None) -> JobResult:
    """Evaluate a bundle; writes metrics.json, PNGs and manifest.json."""
    from geoseg_batch.runtime import configure_tensorflow
    from geoseg_batch.training.evaluate import evaluate

    configure_tensorflow()
    result = evaluate(job)
    outputs = [{"metrics": str(result.metrics_path)}]
    summary = {k: result.metrics[k] for k in ("accuracy", "precision", "recall", "f1", "iou")}
    plots = [(p.stem.replace("_", " "), p) for p in sorted(Path(result.out).glob("*.png"))]
    _write_report(Path(result.out), f"evaluate: {job.name}", summary, resolved(job), plots)
    return JobResult("evaluate", result.out, result.manifest, outputs, summary)


def run_demo(job: DemoJob, client: Any | None = None) -> JobResult:
    """Synthetic chips -> shards (on Dask) -> train -> evaluate -> predict the synthetic scenes (on Dask)
    -> mosaic them onto one grid -> one HTML report of it all."""
    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, connect
    from geoseg_batch.config import DataSpec
    from geoseg_batch.data.pack import pack_shards
    from geoseg_batch.data.synthetic import SYNTHETIC_PIXEL_M, synth
    from geoseg_batch.report import prediction_quicklooks, write_run_report

    started = time.perf_counter()
    out = Path(job.out)
    log.info("demo: synthesizing %d chips (%dx%d, %d bands) and %d scenes in %s",
             job.chips, job.size, job.size, job.bands, job.scenes, out / "data")
    data = synth(out / "data", chips=job.chips, bands=job.bands, size=job.size, scenes=job.scenes, seed=job.seed)
    with connect(job.cluster, MODEL_WORKER_IMPORTS) if client is None else contextlib.nullcontext(client) as active:
        log.info("demo: packing shards on the Dask cluster (dashboard %s)", active.dashboard_link)
        packed = pack_shards(data.chips_dir, out / "shards", chips_per_shard=64, overwrite=True, client=active)
        train = run_train(TrainJob(name="demo", out=out / "train", model=job.model, train=job.train,
                                   data=DataSpec(path=packed.out, resolution_m=SYNTHETIC_PIXEL_M)))
        bundle = Path(train.outputs[0]["bundle"])
        evaluation = run_evaluate(EvaluateJob(model=bundle, data=packed.out, out=out / "evaluate", split="test"))
        scene_scores, images, mosaicked = {}, [], None
        if data.scenes:
            log.info("demo: predicting %d georeferenced scenes tile by tile", len(data.scenes))
            predicted = run_predict(PredictJob(scenes=list(data.scenes), model=bundle, out=out / "predict",
                                               tile=job.tile, overwrite=True), active)
            scene_scores = {Path(o["scene"]).name: scene_f1(Path(o["mask_cog"]), truth)
                            for o, truth in zip(predicted.outputs, data.truths)}
            log.info("demo: mosaicking the scenes' predictions (two CRSs) onto one grid")
            mosaicked = run_mosaic(MosaicJob(predictions=[out / "predict"], out=out / "mosaic", overwrite=True),
                                   active)
            images = [image for entry in predicted.outputs
                      for image in prediction_quicklooks(entry, out / "report")]
            images += prediction_quicklooks(mosaicked.outputs[0], out / "report", name="mosaic")
    outputs = [{"bundle": str(bundle), "metrics": str(evaluation.outputs[0]["metrics"]),
                "report": str(out / "report.html"), "evaluation": str(evaluation.out), "shards": str(packed.out),
                "scenes": [str(s) for s in data.scenes], "predictions": str(out / "predict") if data.scenes else None,
                "mosaic": None if mosaicked is None else mosaicked.outputs[0]["mask_cog"]}]
    summary = {"wall_s": round(time.perf_counter() - started, 3), "chips": job.chips,
               **{f"test_{k}": v for k, v in evaluation.summary.items()}, "scene_f1": scene_scores}
    images += [(f"evaluation: {Path(p).stem.replace('_', ' ')}", Path(p)) for p in sorted(evaluation.out.glob("*.png"))]
    write_run_report(out / "report.html", "geoseg_batch demo", summary, resolved(job), images,
                     metrics=evaluation.summary)
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
    started or a file written. Resumable: the staging directory is named after the job's
    settings and input checksums and records finished tiles, so re-running a killed job
    computes only the rest. ``incremental``: scenes whose content and settings are unchanged
    since the last run keep their outputs (hard links), only the others are predicted, and
    ``out`` switches to the new version in one atomic step.
    """
    from geoseg_batch.geo.grid import TileGrid, round_up
    from geoseg_batch.geo.scene import open_scene, scene_paths
    from geoseg_batch.io.publish import config_digest, link_tree
    from geoseg_batch.model.bundle import read_metadata
    from geoseg_batch.monitor import PeakMemory, RunSummary
    from geoseg_batch.report import write_run_report

    started = time.perf_counter()
    metadata = read_metadata(job.model)
    multiple = metadata.size_multiple
    if job.tile % multiple:
        raise ConfigError(
            f"tile size {job.tile} is not a multiple of the model's size multiple {multiple} (2**depth); "
            f"use --tile {round_up(job.tile, multiple)}"
        )
    paths = scene_paths(job.scenes, job.scene_list)
    scenes = [open_scene(p, metadata, bands=job.bands, nodata=job.nodata, resample=job.resample,
                         resampling=job.resampling) for p in paths]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"scenes share a file name ({stems}); outputs are named after it, rename one")
    overlap = job.overlap if job.overlap is not None else metadata.receptive_radius // 2
    halo = metadata.receptive_radius if job.stitch == "exact" else overlap
    grids = [TileGrid.for_model(s.shape, job.tile, halo, multiple) for s in scenes]
    out = Path(job.out)
    with contextlib.ExitStack() as running:
        model_checksum = checksums([job.model])  # first: the workers' model plugin is named after it
        model_digest = model_checksum[str(job.model)]
        sums, session = _hashed_inputs(job, paths, model_digest, client, running)
        settings = _settings(job, scenes=[], scene_list=None)
        scene_keys = {stem: config_digest(settings, {**model_checksum, "scene": sums[str(path)]})
                      for stem, path in zip(stems, paths)}
        run_key = config_digest(settings, scene_keys)
        with _publishing(out, run_key, job.incremental, job.overwrite) as (stage, previous), PeakMemory() as memory:
            reused = _reusable_scenes(previous, scene_keys)
            for stem in reused:
                for name in _scene_files(stem, job):
                    if (previous / name).exists() and not (stage / name).exists():
                        link_tree(previous / name, stage / name)
            todo = [n for n, stem in enumerate(stems) if stem not in reused]
            if todo and session is None:
                session = running.enter_context(_model_session(job, model_digest, client))
            summary = {"scenes": len(scenes), "scenes_predicted": len(todo), "scenes_reused": len(reused),
                       **_predict_scenes(job, metadata, [scenes[n] for n in todo], [grids[n] for n in todo],
                                         [stems[n] for n in todo], stage, session, memory)}
            outputs = [_scene_entry(path, out, stem, job) for path, stem in zip(paths, stems)]
            write_json(stage / STATE_NAME, {stem: {"scene": str(path), "key": scene_keys[stem]}
                                            for stem, path in zip(stems, paths)})
            summary["wall_s"] = round(time.perf_counter() - started, 3)
            summary["mpx_per_s"] = round(summary["megapixels"] / summary["wall_s"], 4)
            log.info("%s", RunSummary.of(len(todo), summary["tiles_total"], summary["tiles_computed"],
                                         summary["megapixels"], summary["wall_s"],
                                         summary["peak_worker_rss_bytes"] or None,
                                         tiles_skipped=summary["tiles_skipped"]).format())
            entries = [_scene_entry(path, stage, stem, job) for path, stem in list(zip(paths, stems))[:REPORT_SCENES]]
            images = _quicklooks(entries if job.cog else [], stage / "report", session.client if session else None)
            summary["report"] = str(out / "report.html")
            write_run_report(stage / "report.html", f"predict: {job.name}", summary, resolved(job), images)
            manifest = write_manifest(stage, command="predict", outputs=outputs, summary=summary, config=resolved(job),
                                      inputs={**model_checksum, **sums})
    return JobResult("predict", out, out / manifest.name, outputs, summary)


def _hashed_inputs(job: PredictJob, paths: list[Path], model_digest: str, client: Any | None,
                   running: contextlib.ExitStack) -> tuple[dict[str, str], _ModelSession | None]:
    """Checksums of the scenes, and (unless ``job.incremental``) the model session on ``running``,
    started while the scenes are hashed (hashlib and file reads release the GIL)."""
    if job.incremental:  # unchanged scenes are reused: start nothing before knowing which
        return checksums(paths), None
    require_free(Path(job.out), job.overwrite)  # fail before starting a cluster
    with concurrent.futures.ThreadPoolExecutor(1) as hasher:
        hashed = hasher.submit(checksums, paths)
        session = running.enter_context(_model_session(job, model_digest, client))
        return hashed.result(), session


def _quicklooks(entries: list[dict[str, Any]], out_dir: Path, client: Any | None) -> list[tuple[str, Path]]:
    """The report's quicklooks of predict output entries: one task per image on ``client`` (side by side),
    else here."""
    from geoseg_batch.report import QUICKLOOK_SOURCES, prediction_quicklooks

    if client is None:
        return [image for entry in entries for image in prediction_quicklooks(entry, out_dir)]
    tasks = [client.submit(prediction_quicklooks, entry, out_dir, kinds=(kind,), pure=False)
             for entry in entries for kind in QUICKLOOK_SOURCES]
    return [image for images in client.gather(tasks) for image in images]


def _settings(job: PredictJob | MosaicJob, **inputs: Any) -> dict[str, Any]:
    """What makes a job's results what they are: its resolved config less ``inputs`` (keyed by content
    elsewhere), where it writes and where it runs."""
    where = {"out": Path("."), "name": "", "overwrite": False,
             "cluster": job.cluster.model_copy(update={"scheduler": None, "workers": None})}
    return resolved(job.model_copy(update={**inputs, **where}))


STATE_NAME = "state.json"  # per output: what each scene's outputs were made from (incremental runs)
REPORT_SCENES = 8  # scenes shown in a run report (a nightly run may hold hundreds)


@contextlib.contextmanager
def _publishing(out: Path, key: str, incremental: bool, overwrite: bool) -> Iterator[tuple[Path, Path | None]]:
    """(staging directory, previous version): versioned for incremental jobs, else a resumable stage."""
    from geoseg_batch.io.publish import staged_directory, versioned_directory

    if incremental:
        with versioned_directory(out, key, overwrite=overwrite) as staged:
            yield staged
    else:
        with staged_directory(out, overwrite=overwrite, resume_key=key) as stage:
            yield stage, None


def _reusable_scenes(previous: Path | None, scene_keys: dict[str, str]) -> set[str]:
    """Scenes whose outputs in the previous version were made from the same content and settings."""
    if previous is None or not (previous / STATE_NAME).exists():
        return set()
    state = json.loads((previous / STATE_NAME).read_text())
    return {stem for stem, key in scene_keys.items() if state.get(stem, {}).get("key") == key}


def _scene_files(stem: str, job: PredictJob) -> list[str]:
    """The names of one scene's outputs in ``out``."""
    return [Path(f).name for key, f in _scene_entry(Path(stem), Path("."), stem, job).items() if key != "scene"]


def _scene_entry(path: Path, out: Path, stem: str, job: PredictJob) -> dict[str, Any]:
    """A scene's entry in the manifest's outputs: the scene and the paths of what was made from it."""
    entry = {"scene": str(path), "zarr": str(out / f"{stem}.zarr")}
    if job.cog:
        entry.update({"mask_cog": str(out / f"{stem}_mask.tif"),
                      "probability_cog": str(out / f"{stem}_probabilities.tif")})
    if job.polygons:
        entry["polygons"] = str(out / f"{stem}_polygons.gpkg")
    return entry


@dataclass(frozen=True)
class _ModelSession:
    """A cluster with the job's model loaded on every worker."""

    client: Any
    ref: Any  # PredictorRef
    gpu: bool  # model tasks ask for a GPU
    started: float  # perf_counter() when the cluster was asked for


@contextlib.contextmanager
def _model_session(job: PredictJob, model_digest: str, client: Any | None) -> Iterator[_ModelSession]:
    """``client`` (or a cluster started from ``job.cluster``, closed on exit) with the model (whose
    checksum is ``model_digest``) registered."""
    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, connect
    from geoseg_batch.infer.predictor import register_model

    started = time.perf_counter()
    with (connect(job.cluster, MODEL_WORKER_IMPORTS) if client is None else contextlib.nullcontext(client)) as active:
        ref = register_model(active, job.model, model_digest, job.precision)
        yield _ModelSession(active, ref, job.gpu if job.gpu is not None else _cluster_gpus(active) > 0, started)


def _predict_scenes(job: PredictJob, metadata: Any, scenes: list[Any], grids: list[Any], stems: list[str],
                    stage: Path, session: _ModelSession | None, memory: Any) -> dict[str, Any]:
    """Predict ``scenes`` into ``stage`` (skipping tiles recorded as done); the work's summary figures."""
    from geoseg_batch.geo.polygons import store_polygons, submit_regions
    from geoseg_batch.infer.segment import run_graph, segment_graph
    from geoseg_batch.io.cog import write_cog
    from geoseg_batch.io.zarr_store import MASK_NODATA, PROBABILITY_SCALE, create_store
    from geoseg_batch.monitor import TileProgress

    megapixels = sum(g.shape[0] * g.shape[1] for g in grids) / 1e6
    tiles_total = sum(len(g.tiles()) for g in grids)
    figures: dict[str, Any] = {"megapixels": round(megapixels, 3), "tiles_total": tiles_total, "tiles_computed": 0,
                               "tiles_skipped": 0, "tiles_resumed": 0, "stitch": job.stitch, "tile": job.tile,
                               "halo": grids[0].halo if grids else None, "overlap_fraction": 0.0,
                               "peak_worker_rss_bytes": 0, "peak_tree_rss_bytes": 0}
    if not scenes or session is None:
        return figures  # nothing new: no cluster, no model
    active, ref, gpu = session.client, session.ref, session.gpu
    graphs, resumed, tiles_before = [], 0, 0
    lanes = _model_lanes(active, gpu)
    for number, (scene, grid, stem) in enumerate(zip(scenes, grids, stems)):
        target = create_store(stage / f"{stem}.zarr", scene.geobox, job.tile, metadata.classes, metadata.threshold,
                              job.float_output, job.zarr_format, done_dir=stage / ".done" / stem)
        resumed += len(target.done_tiles())
        graphs.extend(segment_graph(scene, grid, ref, target, job.stitch, gpu=gpu, token=f"{number}-{stem}",
                                    batch_size=job.batch_size, lanes=lanes, priority=-tiles_before))
        tiles_before += len(grid.tiles())  # a scene's model tasks queue after the previous scene's
    log.info("predict: %d scenes, %d tiles (%d done before; %s stitch, tile %d, halo %d) on %s", len(scenes),
             tiles_total, resumed, job.stitch, job.tile, grids[0].halo, active.dashboard_link)
    tiles_started = time.perf_counter()
    todo = tiles_total - resumed
    with TileProgress(todo, megapixels * todo / max(tiles_total, 1)) as progress:
        records = run_graph(graphs, active, progress)
    cogs_started = time.perf_counter()
    cogs = [active.submit(write_cog, stage / f"{stem}.zarr", variable, stage / f"{stem}_{variable}.tif", job.tile,
                          pure=False) for stem in stems for variable in ("mask", "probabilities")] if job.cog else []
    regions = {stem: submit_regions(active, stage / f"{stem}.zarr", MASK_NODATA,
                                    None if job.float_output else PROBABILITY_SCALE) for stem in stems if job.polygons}
    for stem, chunks in regions.items():  # joined here while the COGs are written
        store_polygons(active.gather(chunks), stage / f"{stem}.zarr", stage / f"{stem}_polygons.gpkg", stem)
    active.gather(cogs)  # all scenes' COGs side by side
    phases = {"setup_s": round(tiles_started - session.started, 3), "tiles_s": round(cogs_started - tiles_started, 3),
              "cogs_s": round(time.perf_counter() - cogs_started, 3)}
    log.info("predict: setup %.1f s, tiles %.1f s, COGs %.1f s", *phases.values())
    model_pixels = sum(r.model_pixels for r in records)
    computed = [r for r in records if r.computed]
    figures.update({
        "tiles_computed": len(computed), "tiles_skipped": len(records) - len(computed), "tiles_resumed": resumed,
        "tiles_per_worker": dict(collections.Counter(r.worker for r in records)),
        "overlap_fraction": round(model_pixels / max(megapixels * 1e6, 1) - 1, 4),
        "phases": phases,
    })
    memory.sample()
    # Workers of an external cluster are not our children: their current memory is a lower bound.
    figures["peak_worker_rss_bytes"] = memory.peak_children_bytes or _worker_memory(active)
    figures["peak_tree_rss_bytes"] = memory.peak_tree_bytes
    return figures


def _model_lanes(client: Any, gpu: bool) -> int:
    """How many model tasks ``client``'s cluster runs at once: its worker threads, or its GPUs."""
    if gpu:
        return max(1, int(_cluster_gpus(client)))
    return max(1, sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()))


def prediction_stores(predictions: list[Path]) -> dict[str, tuple[Path, str]]:
    """{scene stem: (zarr store, content key)} of predict output directories (or stores), in order.

    The key is what the predict run recorded the scene's outputs were made from; a store
    without that record gets one from its files' sizes and times.
    """
    from geoseg_batch.errors import MissingInputError

    stores: dict[str, tuple[Path, str]] = {}
    for directory in predictions:
        directory = Path(directory)
        if directory.suffix == ".zarr":
            stores[directory.stem] = (directory, _files_key(directory))
            continue
        manifest = directory / "manifest.json"
        if not manifest.exists():
            raise MissingInputError(f"{directory}: not a predict output (no manifest.json); give predict --out "
                                    "directories or .zarr stores")
        state_path = directory / STATE_NAME
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        for entry in json.loads(manifest.read_text())["outputs"]:
            store = directory / Path(entry["zarr"]).name
            stem = store.stem
            if stem in stores:
                raise ConfigError(f"{directory}: scene {stem!r} is also in another prediction directory; "
                                  "mosaic each scene once")
            stores[stem] = (store, state.get(stem, {}).get("key") or _files_key(store))
    return stores


def _files_key(path: Path) -> str:
    stats = sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))
    return combined_digest({"files": json.dumps(stats)})


def run_mosaic(job: MosaicJob, client: Any | None = None) -> JobResult:
    """Reproject and merge the scenes' predictions onto one grid, chunk by chunk on Dask; zarr + COGs.

    ``incremental``: the previous version's chunks are kept (hard links) and only the chunks
    touched by scenes that are new, changed or gone since then are recomputed (all of them
    when the target grid changed); the new version is published atomically.
    """
    from geoseg_batch.cluster import connect
    from geoseg_batch.geo.mosaic import build_mosaic, chunks_touched, mosaic_grid
    from geoseg_batch.io.cog import write_cog
    from geoseg_batch.io.publish import config_digest, link_tree
    from geoseg_batch.report import prediction_quicklooks, write_run_report

    started = time.perf_counter()
    stores = prediction_stores(job.predictions)
    paths = [store for store, _ in stores.values()]
    grid = mosaic_grid(paths, crs=job.crs, resolution=job.resolution, bounds=job.bounds, chunk=job.chunk)
    keys = {stem: key for stem, (_, key) in stores.items()}
    settings = _settings(job, predictions=[])
    out = Path(job.out)
    with _publishing(out, config_digest(settings, keys), job.incremental, job.overwrite) as (stage, previous):
        store_path = stage / MOSAIC_STORE
        footprints = {stem: chunks_touched(grid, [store]) for stem, (store, _) in stores.items()}
        chunks = _chunks_to_rewrite(previous, grid, keys, footprints)
        if chunks is not None and previous is not None and not store_path.exists():
            link_tree(previous / MOSAIC_STORE, store_path)
        cog_names = {variable: f"mosaic_{variable}.tif" for variable in ("mask", "probabilities")} if job.cog else {}
        with (connect(job.cluster) if client is None and chunks != set() else contextlib.nullcontext(client)) as active:
            built = build_mosaic(paths, store_path, grid, job.merge, chunks=chunks, zarr_format=job.zarr_format,
                                 client=active)
            if chunks == set() and previous is not None:  # nothing changed: the COGs are the previous ones
                for name in cog_names.values():
                    link_tree(previous / name, stage / name)
            elif cog_names:
                active.gather([active.submit(write_cog, store_path, variable, stage / name, job.chunk, pure=False)
                               for variable, name in cog_names.items()])
        written = len(built.chunks_written)
        write_json(stage / STATE_NAME, {"grid": _grid_record(grid), "scenes": {
            stem: {"key": keys[stem], "chunks": sorted(footprints[stem])} for stem in stores}})
        output = {"zarr": str(out / MOSAIC_STORE), **{("mask_cog" if v == "mask" else "probability_cog"): str(out / n)
                                                        for v, n in cog_names.items()}}
        wall = time.perf_counter() - started
        megapixels = grid.shape[0] * grid.shape[1] / 1e6
        summary = {"scenes": len(stores), "merge": job.merge, "megapixels": round(megapixels, 3),
                   "chunks_total": built.chunks_total, "chunks_written": written,
                   "chunks_per_worker": built.chunks_per_worker,
                   "incremental": chunks is not None, "wall_s": round(wall, 3), "mpx_per_s": round(megapixels / wall, 4),
                   "grid": _grid_record(grid)}
        staged_cogs = {key: str(stage / Path(path).name) for key, path in output.items() if key.endswith("_cog")}
        images = prediction_quicklooks(staged_cogs, stage / "report", name="mosaic")
        summary["report"] = str(out / "report.html")
        write_run_report(stage / "report.html", f"mosaic: {job.name}", summary, resolved(job), images)
        manifest = write_manifest(stage, command="mosaic", outputs=[output], summary=summary, config=resolved(job),
                                  inputs=keys)
    return JobResult("mosaic", out, out / manifest.name, [output], summary)


MOSAIC_STORE = "mosaic.zarr"


def _grid_record(grid: Any) -> dict[str, Any]:
    return {"crs": str(grid.crs), "transform": [float(v) for v in tuple(grid.transform)[:6]],
            "shape": list(grid.shape), "chunk": grid.chunk}


def _chunks_to_rewrite(previous: Path | None, grid: Any, keys: dict[str, str],
                       footprints: dict[str, list[tuple[int, int]]]) -> set[tuple[int, int]] | None:
    """Chunks touched by scenes new, changed or gone since ``previous``; None: build everything."""
    state_path = None if previous is None else previous / STATE_NAME
    if state_path is None or not state_path.exists() or not (previous / MOSAIC_STORE).exists():
        return None
    state = json.loads(state_path.read_text())
    if state.get("grid") != _grid_record(grid):
        return None
    before = state.get("scenes", {})
    chunks: set[tuple[int, int]] = set()
    for stem in set(before) | set(keys):
        if before.get(stem, {}).get("key") != keys.get(stem):
            chunks |= {tuple(c) for c in before.get(stem, {}).get("chunks", [])}  # type: ignore[misc]
            chunks |= set(footprints.get(stem, []))
    return chunks


def run_pipeline(job: PipelineJob, client: Any | None = None) -> JobResult:
    """Run the steps in order on one cluster; a record of the run is added to ``out/history/``."""
    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, connect

    started = time.perf_counter()
    out = Path(job.out)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    steps: list[dict[str, Any]] = []
    with (connect(job.cluster, MODEL_WORKER_IMPORTS) if client is None else contextlib.nullcontext(client)) as active:
        for number, step in enumerate(job.steps):
            log.info("pipeline %s: step %d/%d: %s %s", job.name, number + 1, len(job.steps), step.kind, step.name)
            result = run_job(step, active)
            steps.append({"kind": step.kind, "name": step.name, "out": str(result.out),
                          "manifest": str(result.manifest), "summary": result.summary})
    summary = {"steps": len(steps), "wall_s": round(time.perf_counter() - started, 3), "started": stamp,
               "step_summaries": [s["summary"] for s in steps]}
    history = write_json(out / "history" / f"{stamp}-{time.time_ns() % 10**9:09d}.json",
                         {"job": job.name, "steps": steps, "summary": summary})
    outputs = [{"kind": s["kind"], "out": s["out"], "manifest": s["manifest"]} for s in steps]
    quicklooks = [(f"{s['name']}: {p.stem.replace('_', ' ')}", p) for s in steps
                  for p in sorted(Path(s["out"], "report").glob("*.png"))]
    _write_report(out, f"pipeline: {job.name}", {**summary, "history": str(history)}, resolved(job), quicklooks)
    manifest = write_manifest(out, command="pipeline", outputs=outputs, summary={**summary, "history": str(history)},
                              config=resolved(job), inputs={})
    return JobResult("pipeline", out, manifest, outputs, summary)


def _worker_memory(client: Any) -> int:
    return sum(int(w.get("metrics", {}).get("memory", 0)) for w in client.scheduler_info()["workers"].values())


def _cluster_gpus(client: Any) -> float:
    """GPUs the cluster's workers advertise (their resource GPU, summed)."""
    return float(sum(w.get("resources", {}).get("GPU", 0) for w in client.scheduler_info()["workers"].values()))


RUNNERS = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict, "mosaic": run_mosaic,
           "pipeline": run_pipeline, "demo": run_demo}


def run_job(job: AnyJob, client: Any | None = None) -> JobResult:
    """Run any job kind."""
    return RUNNERS[job.kind](job, client)
