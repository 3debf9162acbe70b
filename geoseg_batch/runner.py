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

from geoseg_batch.config import DemoJob, EvaluateJob, TrainJob, resolved
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
    """Synthetic chips -> shards (on the Dask cluster) -> train -> evaluate on the held-out split."""
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
    outputs = [{"bundle": str(bundle), "metrics": str(evaluation.outputs[0]["metrics"]),
                "report": str(evaluation.out), "shards": str(packed.out),
                "scenes": [str(s) for s in data.scenes]}]
    summary = {"wall_s": round(time.perf_counter() - started, 3), "chips": job.chips,
               **{f"test_{k}": v for k, v in evaluation.summary.items()}}
    manifest = write_manifest(out, command="demo", outputs=outputs, summary=summary, config=resolved(job),
                              inputs={})
    return JobResult("demo", out, manifest, outputs, summary)


RUNNERS = {"train": run_train, "evaluate": run_evaluate, "demo": run_demo}


def run_job(job: TrainJob | EvaluateJob | DemoJob, client: Any | None = None) -> JobResult:
    """Run any job kind."""
    return RUNNERS[job.kind](job, client)
