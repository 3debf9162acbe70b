"""One training run: a custom loop with checkpoints, early stopping, resume and a bundle.

The loop (:class:`geoseg_batch.training.loop.TrainLoop`) is written out rather than
``model.fit``, because distributed training runs the same loop under ``tf.distribute``;
one loop keeps metrics, checkpoints and bundles identical. A run goes in steps:

    _setup          the split counts, the model's input size, this process's role
    _build          model and optimizer (in the role's scope), restored from the last checkpoint
    _datasets       this process's training and validation batches
    _train_epochs   the epochs still to do: history row, early stopping, checkpoint after each
    _test_metrics   the best weights on the test split (the chief only)
    _save_bundle    ``model.keras`` with its metadata (:func:`_bundle_metadata`)

After every epoch the run directory gets the files of :mod:`geoseg_batch.training.checkpoint`
(weights, optimizer slots, best weights, ``state.json``, ``history.csv``), each written
atomically. Re-running the same job on the same ``out`` resumes after the last completed
epoch; a finished run only re-publishes its bundle. At the end the best weights are
restored, the test split is evaluated and ``model.keras`` (the bundle) is written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg_batch.version import __version__
from geoseg_batch.config import TrainJob, resolved
from geoseg_batch.data.chips import ChipCollection, count_split
from geoseg_batch.data.stats import BandStats
from geoseg_batch.errors import ConfigError, DataError
from geoseg_batch.model.bundle import BundleMetadata, normalization_of, save_bundle
from geoseg_batch.model.metrics import metrics_from_confusion
from geoseg_batch.training.checkpoint import restore_checkpoint, save_checkpoint, write_history
from geoseg_batch.training.loop import TrainLoop
from geoseg_batch.training.role import Distribution, Role, SingleProcess
from geoseg_batch.training.state import EarlyStopping, TrainState

__all__ = ["BUNDLE_NAME", "CURVES_NAME", "HISTORY_NAME", "METRIC_KEYS", "Distribution", "EarlyStopping",
           "FitResult", "TrainLoop", "TrainState", "fit", "weights_digest"]

log = logging.getLogger(__name__)

BUNDLE_NAME = "model.keras"
HISTORY_NAME = "history.csv"
CURVES_NAME = "training_curves.png"
METRIC_KEYS = ("precision", "recall", "f1", "iou")


@dataclass(frozen=True)
class FitResult:
    """What a run produced."""

    out: Path
    bundle: Path | None  # None on a non-chief rank of a distributed run
    history: Path
    curves: Path | None
    epochs: int
    resumed_from: int  # epoch the run resumed after (0 = fresh start)
    best_epoch: int
    stopped_early: bool
    test_metrics: dict[str, Any] | None
    chips: dict[str, int]
    weights_sha256: str | None = None  # of the final (not best) weights


@dataclass(frozen=True)
class _Setup:
    """What every step of a run reads: the job, the chips, this process's role, the split."""

    job: TrainJob
    collection: ChipCollection  # the chips this process trains on
    full: ChipCollection  # every chip of the run: split counts and the test evaluation
    stats: BandStats
    role: Role
    split: dict[str, Any]  # chip_dataset's split keywords
    counts: dict[str, int]  # chips in each split, over the whole run
    input_size: tuple[int, int] | None  # the resize target, None when chips fit the model
    out: Path  # where this process writes

    @property
    def checkpoint(self) -> Path:
        """The directory this process checkpoints to."""
        return self.out / "checkpoint"


@dataclass
class _Run:
    """The model being trained, its optimizer and steps, and the state of the run."""

    model: Any
    optimizer: Any
    loop: TrainLoop
    state: TrainState
    resumed_from: int  # last epoch completed before this process started (0: a fresh run)


@dataclass(frozen=True)
class _Datasets:
    """This process's batches: training (one epoch each pass), validation (None without local val chips)."""

    train: Any
    val: Any | None
    plain: Any  # the Transform without augmentation: validation and test chips


def fit(job: TrainJob, collection: ChipCollection, stats: BandStats, data_checksum: str,
        distribution: Distribution | None = None) -> FitResult:
    """Train (or resume) one run of ``job`` into ``job.out``, write its bundle, and return what it produced.

    With ``distribution`` this process is one rank of a multi-worker run (see
    :mod:`geoseg_batch.training.distributed`): ``collection`` holds this rank's shards, the
    model and optimizer live in the strategy's scope, every rank runs the same steps and
    takes the same early-stopping decisions from all-reduced validation figures, and only
    the chief writes to ``job.out`` and saves the bundle (the others write to their scratch
    directory).
    """
    setup = _setup(job, collection, stats, distribution if distribution is not None else SingleProcess())
    run = _build(setup)
    data = _datasets(setup)
    _train_epochs(setup, run, data)
    weights_sha256 = weights_digest(run.model)
    if not setup.role.chief:
        return _result(setup, run, None, None, None, weights_sha256)
    if (setup.checkpoint / "best.weights.h5").exists():
        run.model.load_weights(setup.checkpoint / "best.weights.h5")
    test_metrics = _test_metrics(setup, run, data.plain)
    bundle = _save_bundle(setup, run, test_metrics, data_checksum)
    return _result(setup, run, bundle, _plot_curves(setup.out), test_metrics, weights_sha256)


def _setup(job: TrainJob, collection: ChipCollection, stats: BandStats, role: Role) -> _Setup:
    """The run's split and its counts, the model's input size and where ``role`` writes; DataError without
    training chips."""
    data = job.data
    full = role.all_chips(collection)
    split = {"val_fraction": data.val_fraction, "test_fraction": data.test_fraction, "split_seed": data.split_seed}
    counts = {s: count_split(full, s, data.val_fraction, data.test_fraction, data.split_seed)
              for s in ("train", "val", "test")}
    if counts["train"] == 0:
        raise DataError(f"{collection.path}: no chips in the training split ({full.chips} chips in all)")
    return _Setup(job, collection, full, stats, role, split, counts, _model_input_size(job, collection),
                  role.writes_to(Path(job.out)))


def _model_input_size(job: TrainJob, collection: ChipCollection) -> tuple[int, int] | None:
    """The resize target, or None when chips already fit the model."""
    multiple = 2**job.model.depth
    if job.model.input_size is not None:
        size = (job.model.input_size, job.model.input_size)
        return None if size == collection.chip_shape else size
    if any(s % multiple for s in collection.chip_shape):
        raise ConfigError(
            f"{collection.path}: chips are {collection.chip_shape} but a depth-{job.model.depth} U-Net needs "
            f"multiples of {multiple}; set model.input_size (e.g. {multiple * max(1, collection.chip_shape[0] // multiple)}) "
            "to resize them, or lower model.depth"
        )
    return None


def _build(setup: _Setup) -> _Run:
    """Model, optimizer and compiled steps in the role's scope, continued from the chief's last checkpoint."""
    import keras

    from geoseg_batch.model.unet import build_model

    job, spec = setup.job, setup.job.train
    keras.utils.set_random_seed(spec.seed)  # Python's, NumPy's, TF's and Keras' generators (dropout): repeatable
    with setup.role.scope():
        model = build_model(job.model.model_type, bands=setup.collection.bands, classes=len(job.model.classes),
                            depth=job.model.depth, base_filters=job.model.base_filters,
                            batch_norm=job.model.batch_norm, dropout=job.model.dropout, seed=spec.seed)
        optimizer = keras.optimizers.Adam(spec.learning_rate)
        optimizer.build(model.trainable_variables)
    _synchronize_batch_norm(model, setup.role.synchronized_batch_norm)
    resume_from = Path(job.out) / "checkpoint"  # every rank continues from the chief's checkpoint
    state = TrainState.load(resume_from / "state.json") or TrainState()
    if state.epoch:
        restore_checkpoint(resume_from, model, optimizer)
        log.info("resuming %s after epoch %d of %d", job.out, state.epoch, spec.epochs)
    loop = TrainLoop(model, optimizer, spec.loss, len(job.model.classes), job.model.threshold, setup.role.strategy)
    return _Run(model, optimizer, loop, state, state.epoch)


def _datasets(setup: _Setup) -> _Datasets:
    """This process's training batches (its share, as its role cuts them) and its validation batches."""
    from geoseg_batch.data.pipeline import Transform, chip_dataset

    spec, data, collection = setup.job.train, setup.job.data, setup.collection
    augmented = Transform.from_stats(setup.stats, spec.augment, spec.jitter, setup.input_size)
    train = chip_dataset(collection, augmented, split="train", **setup.split, shuffle=True,
                         shuffle_buffer=spec.shuffle_buffer, **setup.role.train_options(spec.batch_size, spec.seed))
    plain = Transform.from_stats(setup.stats, input_size=setup.input_size)
    local_val = count_split(collection, "val", data.val_fraction, data.test_fraction, data.split_seed)
    val = chip_dataset(collection, plain, split="val", **setup.split, batch_size=spec.batch_size) if local_val else None
    return _Datasets(setup.role.per_epoch(train), val, plain)


def _train_epochs(setup: _Setup, run: _Run, data: _Datasets) -> None:
    """Run the epochs still to do; after each, the history and a checkpoint; stop early as the job says."""
    spec, state, loop = setup.job.train, run.state, run.loop
    stopping = state.early_stopping(spec.patience, spec.epochs)
    while state.epoch < spec.epochs and not state.stopped_early:
        epoch, started = state.epoch + 1, time.perf_counter()
        loss, matrix, _ = loop.run(loop.train_step, data.train, loop.classes)
        val = loop.validation(data.val) if setup.counts["val"] else None  # every rank, when any has val chips
        row = _epoch_row(epoch, loss, matrix, val, float(np.asarray(run.optimizer.learning_rate.numpy())),
                         time.perf_counter() - started, setup.job.model.classes)
        stop = stopping.update(epoch, row.get("val_loss", row["loss"]))
        state.record(epoch, row, stopping, stop)
        write_history(setup.out / HISTORY_NAME, state.history)
        save_checkpoint(setup.checkpoint, run.model, run.optimizer, state, best=stopping.improved)
        log.info("epoch %d/%d  %s", epoch, spec.epochs, "  ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k in ("loss", "val_loss", "f1", "val_f1", "val_iou")
        ) + f"  {row['seconds']:.1f}s")
        if state.stopped_early:
            log.info("early stopping: no val_loss improvement for %d epochs (best epoch %d)", spec.patience,
                     state.best_epoch)


def _epoch_row(epoch: int, loss: float, matrix: np.ndarray, val: tuple[float, np.ndarray] | None,
               learning_rate: float, seconds: float, classes: tuple[str, ...]) -> dict[str, float]:
    """One history row: the epoch's training loss and scores, validation ones when there are, lr, seconds."""
    row: dict[str, float] = {"epoch": epoch, "loss": loss}
    scores = metrics_from_confusion(matrix, classes)
    row.update({k: scores[k] for k in METRIC_KEYS})
    if val is not None:
        val_scores = metrics_from_confusion(val[1], classes)
        row["val_loss"] = val[0]
        row.update({f"val_{k}": val_scores[k] for k in METRIC_KEYS})
    row["learning_rate"] = learning_rate
    row["seconds"] = round(seconds, 3)
    return row


def _test_metrics(setup: _Setup, run: _Run, plain: Any) -> dict[str, Any] | None:
    """Scores and confusion matrix of the model on the run's whole test split; None without test chips."""
    from geoseg_batch.data.pipeline import chip_dataset

    if not setup.counts["test"]:
        return None
    test_data = chip_dataset(setup.full, plain, split="test", **setup.split, batch_size=setup.job.train.batch_size)
    _, matrix, _ = run.loop.run(run.loop.eval_step, test_data, run.loop.classes)
    metrics = metrics_from_confusion(matrix, setup.job.model.classes)
    metrics["confusion_matrix"] = matrix.tolist()
    return metrics


def _save_bundle(setup: _Setup, run: _Run, test_metrics: dict[str, Any] | None, data_checksum: str) -> Path:
    """``out/model.keras``: the model (batch norm unsynchronised) with its metadata; returns its path."""
    _synchronize_batch_norm(run.model, False)  # a bundle must load anywhere, also on backends without the option
    metadata = _bundle_metadata(setup, run, test_metrics, data_checksum)
    return save_bundle(run.model, metadata, setup.out / BUNDLE_NAME)


def _bundle_metadata(setup: _Setup, run: _Run, test_metrics: dict[str, Any] | None,
                     data_checksum: str) -> BundleMetadata:
    """What inference needs to know of the model (bands, normalization, classes, geometry) and its provenance."""
    from geoseg_batch.model.geometry import model_geometry

    job, collection, state = setup.job, setup.collection, run.state
    geometry = model_geometry(run.model)
    return BundleMetadata(
        model_type=job.model.model_type,
        band_names=collection.band_names,
        classes=tuple(job.model.classes),
        threshold=job.model.threshold,
        input_size=setup.input_size or collection.chip_shape,
        size_multiple=geometry.size_multiple,
        receptive_radius=geometry.receptive_radius,
        normalization=normalization_of(setup.stats),
        resolution_m=job.data.resolution_m,
        architecture={"depth": job.model.depth, "base_filters": job.model.base_filters,
                      "batch_norm": job.model.batch_norm, "dropout": job.model.dropout},
        provenance={"data": str(setup.full.path), "data_checksum": data_checksum, "split": setup.split,
                    "config": resolved(job), "package_version": __version__, "best_epoch": state.best_epoch,
                    "epochs": state.epoch, "test_metrics": test_metrics, "chips": setup.counts,
                    "workers": setup.role.world},
    )


def _result(setup: _Setup, run: _Run, bundle: Path | None, curves: Path | None,
            test_metrics: dict[str, Any] | None, weights_sha256: str) -> FitResult:
    """The run's FitResult (bundle, curves and test metrics are None on a non-chief rank)."""
    state = run.state
    return FitResult(setup.out, bundle, setup.out / HISTORY_NAME, curves, state.epoch, run.resumed_from,
                     state.best_epoch, state.stopped_early, test_metrics, setup.counts, weights_sha256)


def _synchronize_batch_norm(model: Any, synchronized: bool) -> None:
    """Batch norm over the global batch: every rank then updates identical moving statistics, as one process would."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized


def weights_digest(model: Any) -> str:
    """SHA-256 of a model's weights (to show ranks of a distributed run hold the same ones)."""
    import hashlib

    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _plot_curves(out: Path) -> Path | None:
    from geoseg_batch.report import plot_training_curves

    history = out / HISTORY_NAME
    return plot_training_curves(history, out / CURVES_NAME) if history.exists() else None
