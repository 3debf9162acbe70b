"""Evaluate a bundle on chips: metrics, confusion matrix, precision-recall curve, samples.

Chips stream through the model (its inference graph, in the precision asked for) in
batches (normalized and resized as the bundle says); the confusion matrix at the bundle's
threshold and, for binary models, two histograms of the positive-class probability (over
positive and over negative pixels, 1000 bins) are accumulated, so the PR curve and its
best-F1 threshold come from every pixel without holding predictions in memory.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg_batch.config import EvaluateJob
from geoseg_batch.data.chips import ChipCollection, open_chips
from geoseg_batch.errors import DataError
from geoseg_batch.io.publish import atomic_path, checksums, write_json
from geoseg_batch.model.bundle import BundleMetadata, load_bundle
from geoseg_batch.model.inference import inference_model
from geoseg_batch.model.metrics import metrics_from_confusion

BINS = 1000


@dataclass(frozen=True)
class EvaluateResult:
    """What an evaluation wrote into its directory, its headline metrics, and its manifest's parts."""

    out: Path
    metrics_path: Path
    metrics: dict[str, Any]
    outputs: list[dict[str, Any]]
    summary: dict[str, Any]
    inputs: dict[str, str]


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall at each threshold, and the threshold of best F1."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    best_threshold: float
    best_f1: float


def pr_curve(positive_hist: np.ndarray, negative_hist: np.ndarray) -> PRCurve:
    """PR curve from probability histograms over [0, 1] (bin i counts p in [i/B, (i+1)/B))."""
    bins = len(positive_hist)
    tp = np.cumsum(positive_hist[::-1])[::-1].astype(np.float64)  # pixels with p >= threshold
    fp = np.cumsum(negative_hist[::-1])[::-1].astype(np.float64)
    positives = float(positive_hist.sum())
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    recall = tp / positives if positives else np.zeros_like(tp)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    best = int(np.argmax(f1))
    thresholds = np.arange(bins) / bins
    return PRCurve(thresholds, precision, recall, float(thresholds[best]), float(f1[best]))


def _check_bands(metadata: BundleMetadata, band_names: tuple[str, ...], source: Path) -> None:
    if len(band_names) != metadata.bands:
        raise DataError(
            f"{source}: {len(band_names)} bands, but the model was trained on {metadata.bands} "
            f"({', '.join(metadata.band_names)}); evaluate on data with the same bands"
        )


def evaluate(job: EvaluateJob, into: Path) -> EvaluateResult:
    """Evaluate ``job.model`` on ``job.data``; writes metrics.json, pr_curve.csv and the PNGs into ``into``
    (a publication's stage, published at ``job.out``) and returns what a manifest lists of them."""
    started = time.perf_counter()
    bundle = load_bundle(job.model)
    metadata, model = bundle.metadata, inference_model(bundle.model, job.precision)
    collection = open_chips(job.data, fill_nan=job.fill_nan)
    _check_bands(metadata, collection.band_names, collection.path)
    tally = _Tally(len(metadata.classes), metadata.threshold, job.samples)
    for x, y in _chips(job, metadata, collection):
        tally.add(x.numpy(), y.numpy(), np.asarray(model.predict_on_batch(x)))
    if tally.chips == 0:
        raise DataError(f"{collection.path}: no chips in split {job.split!r}; use --split all")
    curve = pr_curve(tally.positive_hist, tally.negative_hist)
    metrics = _metrics(tally, curve, metadata, job.split)
    _write_products(job, into, metrics, tally, curve, metadata)
    out = Path(job.out)
    outputs = [{"metrics": str(out / "metrics.json"), "confusion_matrix": str(out / "confusion_matrix.png"),
                "pr_curve": str(out / "pr_curve.png"), "samples": str(out / "samples.png") if tally.samples else None}]
    summary = {"wall_s": round(time.perf_counter() - started, 3), "chips": tally.chips, "pixels": metrics["pixels"],
               "f1": metrics["f1"], "iou": metrics["iou"]}
    return EvaluateResult(out, out / "metrics.json", metrics, outputs, summary,
                          checksums([job.model, *collection.files()]))


def _chips(job: EvaluateJob, metadata: BundleMetadata, collection: ChipCollection) -> Any:
    """The tf.data batches of ``job.split``, normalized and resized as the bundle says."""
    from geoseg_batch.data.pipeline import Transform, chip_dataset
    from geoseg_batch.data.stats import BandStats

    split = metadata.provenance.get("split", {"val_fraction": 0.0, "test_fraction": 0.0, "split_seed": 0})
    stats = BandStats(metadata.band_names, tuple(metadata.normalization["mean"]), tuple(metadata.normalization["std"]),
                      (), (), 0)
    input_size = tuple(metadata.input_size)
    transform = Transform.from_stats(stats, input_size=None if input_size == collection.chip_shape else input_size)
    return chip_dataset(collection, transform, split=job.split, batch_size=job.batch_size, **split)


@dataclass
class _Tally:
    """What evaluation accumulates batch by batch: confusion matrix, probability histograms, samples, chips."""

    classes: int
    threshold: float
    wanted: int  # samples to keep
    matrix: np.ndarray = field(init=False)
    positive_hist: np.ndarray = field(init=False)  # of the positive-class score over positive pixels
    negative_hist: np.ndarray = field(init=False)  # ... over negative pixels
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    chips: int = 0

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.classes, self.classes), np.int64)
        self.positive_hist, self.negative_hist = np.zeros(BINS, np.int64), np.zeros(BINS, np.int64)

    def add(self, images: np.ndarray, truth: np.ndarray, probabilities: np.ndarray) -> None:
        """Count one batch: images (b, r, c, bands), truth (b, r, c), the model's probabilities (b, r, c, classes)."""
        classes = self.classes
        predicted = (probabilities[..., 0] >= self.threshold).astype(np.int64) if classes == 2 \
            else probabilities.argmax(-1)
        self.matrix += np.bincount((truth * classes + predicted).ravel(),
                                   minlength=classes * classes).reshape(classes, classes)
        score = probabilities[..., 0] if classes == 2 else 1.0 - probabilities[..., 0]
        bins = np.minimum((score * BINS).astype(np.int64), BINS - 1)
        self.positive_hist += np.bincount(bins[truth > 0], minlength=BINS)
        self.negative_hist += np.bincount(bins[truth == 0], minlength=BINS)
        self.samples.extend(_pick_samples(images, truth, predicted, score, self.wanted - len(self.samples)))
        self.chips += len(truth)


def _metrics(tally: _Tally, curve: PRCurve, metadata: BundleMetadata, split: str) -> dict[str, Any]:
    """metrics.json: scores at the bundle's threshold, the best-F1 threshold, the confusion matrix, counts."""
    metrics = metrics_from_confusion(tally.matrix, metadata.classes)
    metrics.update({
        "threshold": metadata.threshold,
        "best_threshold": curve.best_threshold,
        "best_f1": curve.best_f1,
        "confusion_matrix": tally.matrix.tolist(),
        "split": split,
        "chips": tally.chips,
        "positive": metadata.classes[1] if tally.classes == 2 else None,
    })
    return metrics


def _write_products(job: EvaluateJob, stage: Path, metrics: dict[str, Any], tally: _Tally, curve: PRCurve,
                    metadata: BundleMetadata) -> None:
    """Write metrics.json, the PNGs and pr_curve.csv into ``stage``; returns None."""
    from geoseg_batch.report import plot_confusion_matrix, plot_pr_curve, plot_samples

    write_json(stage / "metrics.json", metrics)
    plot_confusion_matrix(tally.matrix, metadata.classes, stage / "confusion_matrix.png")
    plot_pr_curve(curve.precision, curve.recall, curve.thresholds, curve.best_threshold, stage / "pr_curve.png")
    _write_pr_csv(stage / "pr_curve.csv", curve)
    if tally.samples:
        images, truths, predictions, scores = (np.stack(a) for a in zip(*tally.samples))
        plot_samples(images, truths, predictions, metadata.band_names, stage / "samples.png",
                     probabilities=scores, max_samples=job.samples)


def _pick_samples(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, score: np.ndarray,
                  wanted: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Up to ``wanted`` chips of a batch, those with positive pixels first."""
    if wanted <= 0:
        return []
    order = sorted(range(len(truth)), key=lambda i: -int((truth[i] > 0).any()))
    return [(images[i], truth[i], predicted[i], score[i]) for i in order[:wanted]]


def _write_pr_csv(path: Path, curve: PRCurve) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["threshold", "precision", "recall"])
        writer.writerows(zip(curve.thresholds.round(4), curve.precision.round(6), curve.recall.round(6)))
