"""run_train: one model, or every run of a sweep; bundles, histories, a report and manifest.json in ``out``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg_batch.config import TrainJob, resolved
from geoseg_batch.data.chips import ChipCollection, open_chips
from geoseg_batch.data.stats import BandStats, compute_stats, load_stats
from geoseg_batch.errors import MissingInputError
from geoseg_batch.io.publication import Publication
from geoseg_batch.io.publish import checksums, combined_digest, write_json
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import Location, is_url
from geoseg_batch.runs.result import JobResult, write_report

if TYPE_CHECKING:  # training imports TensorFlow; only jobs that train load it
    from geoseg_batch.training.fit import FitResult


def training_stats(collection: ChipCollection, out: Path, client: Any | None = None) -> BandStats:
    """Band statistics stored beside shards (a file, or an object of their store), or computed with Dask (and
    saved in ``out``)."""
    from geoseg_batch.data.shards import STATS_NAME, beside

    stored = _stored_stats(collection, beside(collection.root, STATS_NAME)) if collection.layout == "shards" else None
    if stored is not None and stored.band_names == collection.band_names:
        return stored
    stats = compute_stats(collection, client=client)
    write_json(out / STATS_NAME, stats.to_dict())
    return stats


def _stored_stats(collection: ChipCollection, stored: Location) -> BandStats | None:
    """The statistics at ``stored``, None when there are none (no file, no object)."""
    if not is_url(stored):
        return load_stats(stored) if Path(stored).exists() else None
    try:
        return load_stats(stored, collection.cloud)
    except MissingInputError:
        return None


def run_train(job: TrainJob, client: Any | None = None) -> JobResult:
    """Train one model, or every run of a sweep; writes bundles, histories and manifest.json."""
    from geoseg_batch.runtime import configure_tensorflow
    from geoseg_batch.training.fit import fit  # imports Keras, before the thread pools are set (as always)

    configure_tensorflow()
    started = time.perf_counter()
    collection = open_chips(job.data.path, fill_nan=job.data.fill_nan,  # validate before writing anything
                            cloud=CloudSettings.of(job.storage) if is_url(job.data.path) else None)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    with Publication(out, direct=True) as publication:  # checkpoints are written as training goes
        stats = training_stats(collection, out, client)
        inputs = checksums(collection.files(), collection.cloud)  # objects: ETag and size, nothing downloaded
        trainer = _Trainer(fit, collection, stats, combined_digest(inputs), client)
        outputs, summary = _single_run(job, trainer) if job.sweep is None else _sweep(job, trainer, out)
        summary["wall_s"] = round(time.perf_counter() - started, 3)
        curves = [("training curves", Path(o["curves"])) for o in outputs if o.get("curves")]
        summary["report"] = str(write_report(out, f"train: {job.name}", summary, resolved(job), curves,
                                             summary.get("test_metrics")))
        manifest = publication.write_manifest(command="train", outputs=outputs, summary=summary,
                                              config=resolved(job), inputs=inputs)
    return JobResult("train", out, manifest, outputs, summary)


class _Trainer:
    """Trains one job's model on ``collection``: in this process, or one rank per worker of a cluster."""

    def __init__(self, fit: Callable[..., FitResult], collection: ChipCollection, stats: BandStats, digest: str,
                 client: Any | None) -> None:
        self.fit, self.collection, self.stats, self.digest, self.client = fit, collection, stats, digest, client
        self.ranks: list[dict[str, Any]] = []  # distributed runs: each rank's assignment and weights

    def __call__(self, job: TrainJob) -> FitResult:
        """The fit of ``job`` (a whole job, or one run of a sweep)."""
        import keras

        if not _distributed(job, self.client):
            keras.backend.clear_session()
            return self.fit(job, self.collection, self.stats, self.digest)
        from geoseg_batch.cluster import connect
        from geoseg_batch.training.distributed import train_on_cluster

        with connect(job.cluster) if self.client is None else contextlib.nullcontext(self.client) as active:
            results, assignment = train_on_cluster(job, self.collection, self.stats, self.digest, active,
                                                   job.cluster.train_workers)
        for entry, rank in zip(assignment, results):
            self.ranks.append({**entry, "weights_sha256": rank.weights_sha256})
        return _fit_result(results[0].result)


def _single_run(job: TrainJob, trainer: _Trainer) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(outputs, summary) of training ``job`` once."""
    result = trainer(job)
    summary = {"epochs": result.epochs, "resumed_from_epoch": result.resumed_from,
               "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
               "chips": result.chips, "test_metrics": result.test_metrics}
    outputs = [{"bundle": str(result.bundle), "history": str(result.history),
                "curves": str(result.curves) if result.curves else None}]
    if trainer.ranks:
        summary["workers"] = trainer.ranks
    return outputs, summary


def _sweep(job: TrainJob, trainer: _Trainer, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(outputs, summary) of every run of ``job``'s sweep."""
    from geoseg_batch.training.sweep import RESULTS_NAME, run_sweep

    rows = run_sweep(job, trainer)
    best = max(rows, key=lambda r: r["f1"] or 0.0)
    summary = {"runs": len(rows), "best_run": best["run"], "best_f1": best["f1"], "results": str(out / RESULTS_NAME)}
    return [{"bundle": r["bundle"], "run": r["run"]} for r in rows], summary


def _distributed(job: TrainJob, client: Any | None) -> bool:
    """Train on a cluster (one rank per worker) when given one or the job names one; else in this process."""
    return client is not None or bool(job.cluster.scheduler or job.cluster.workers)


def _fit_result(payload: dict[str, Any]) -> FitResult:
    """The chief rank's FitResult, back from JSON."""
    from geoseg_batch.training.fit import FitResult

    paths = {k: Path(payload[k]) if payload.get(k) else None for k in ("out", "bundle", "history", "curves")}
    return FitResult(**{**payload, **paths})
