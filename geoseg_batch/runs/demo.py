"""run_demo: synthetic chips -> shards -> train -> evaluate -> predict scenes -> mosaic -> one report."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.config import DemoJob, EvaluateJob, MosaicJob, PredictJob, TrainJob, resolved
from geoseg_batch.io.publication import Publication
from geoseg_batch.runs.evaluate import run_evaluate
from geoseg_batch.runs.mosaic import run_mosaic
from geoseg_batch.runs.predict import run_predict
from geoseg_batch.runs.result import JobResult
from geoseg_batch.runs.train import run_train

if TYPE_CHECKING:
    from geoseg_batch.data.synthetic import SynthResult

log = logging.getLogger(__name__)


def run_demo(job: DemoJob, client: Any | None = None) -> JobResult:
    """Synthetic chips -> shards (on Dask) -> train -> evaluate -> predict the synthetic scenes (on Dask)
    -> mosaic them onto one grid -> one HTML report of it all."""
    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, connect
    from geoseg_batch.config import DataSpec
    from geoseg_batch.data.pack import pack_shards
    from geoseg_batch.data.synthetic import SYNTHETIC_PIXEL_M, synth
    from geoseg_batch.report import write_run_report

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
        scene_scores, images, mosaicked = _demo_scenes(job, data, bundle, active) if data.scenes else ({}, [], None)
    outputs = [{"bundle": str(bundle), "metrics": str(evaluation.outputs[0]["metrics"]),
                "report": str(out / "report.html"), "evaluation": str(evaluation.out), "shards": str(packed.out),
                "scenes": [str(s) for s in data.scenes], "predictions": str(out / "predict") if data.scenes else None,
                "mosaic": None if mosaicked is None else mosaicked.outputs[0]["mask_cog"]}]
    summary = {"wall_s": round(time.perf_counter() - started, 3), "chips": job.chips,
               **{f"test_{k}": v for k, v in evaluation.summary.items()}, "scene_f1": scene_scores}
    images += [(f"evaluation: {Path(p).stem.replace('_', ' ')}", Path(p)) for p in sorted(evaluation.out.glob("*.png"))]
    with Publication(out, direct=True) as publication:  # each step published its own results
        write_run_report(out / "report.html", "geoseg_batch demo", summary, resolved(job), images,
                         metrics=evaluation.summary)
        manifest = publication.write_manifest(command="demo", outputs=outputs, summary=summary,
                                              config=resolved(job), inputs={})
    return JobResult("demo", out, manifest, outputs, summary)


def _demo_scenes(job: DemoJob, data: SynthResult, bundle: Path, client: Any
                 ) -> tuple[dict[str, float], list[tuple[str, Path]], JobResult]:
    """(F1 per scene, quicklooks, mosaic result) of predicting the synthetic scenes and mosaicking them."""
    from geoseg_batch.report import prediction_quicklooks

    out = Path(job.out)
    log.info("demo: predicting %d georeferenced scenes tile by tile", len(data.scenes))
    predicted = run_predict(PredictJob(scenes=list(data.scenes), model=bundle, out=out / "predict",
                                       tile=job.tile, overwrite=True), client)
    scene_scores = {Path(o["scene"]).name: scene_f1(Path(o["mask_cog"]), truth)
                    for o, truth in zip(predicted.outputs, data.truths)}
    log.info("demo: mosaicking the scenes' predictions (two CRSs) onto one grid")
    mosaicked = run_mosaic(MosaicJob(predictions=[out / "predict"], out=out / "mosaic", overwrite=True), client)
    images = [image for entry in predicted.outputs for image in prediction_quicklooks(entry, out / "report")]
    images += prediction_quicklooks(mosaicked.outputs[0], out / "report", name="mosaic")
    return scene_scores, images, mosaicked


def scene_f1(mask_path: Path, truth_path: Path) -> float:
    """Pixel F1 (4 places) of a predicted binary class mask against a truth raster on the same grid, from
    their confusion matrix counted block by block; 1.0 when neither has a positive pixel."""
    import rasterio

    from geoseg_batch.model.metrics import class_metrics

    matrix = np.zeros((2, 2), dtype=np.int64)
    with rasterio.open(mask_path) as mask_src, rasterio.open(truth_path) as truth_src:
        for _, window in truth_src.block_windows(1):
            truth, mask = truth_src.read(1, window=window), mask_src.read(1, window=window)
            matrix += binary_confusion(truth, mask, (truth != truth_src.nodata) & (mask != mask_src.nodata))
    if matrix[1, 1] + matrix[0, 1] + matrix[1, 0] == 0:
        return 1.0
    return round(class_metrics(matrix, 1)["f1"], 4)


def binary_confusion(truth: np.ndarray, predicted: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The (2, 2) confusion matrix (``[t, p]``: pixels of true class t predicted p) of the ``valid`` pixels
    whose truth and prediction are both 0 or 1."""
    counted = valid & (truth <= 1) & (predicted <= 1) & (truth >= 0) & (predicted >= 0)
    flat = truth[counted].astype(np.int64) * 2 + predicted[counted].astype(np.int64)
    return np.bincount(flat, minlength=4).reshape(2, 2)
