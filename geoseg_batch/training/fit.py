"""One training run: a custom loop with checkpoints, early stopping, resume and a bundle.

The loop is written out (GradientTape + optimizer.apply_gradients around Keras 3 layers
and losses) rather than ``model.fit``, because distributed training runs the same loop
under ``tf.distribute`` and Keras 3's ``fit`` does not work under
MultiWorkerMirroredStrategy; one loop keeps metrics, checkpoints and bundles identical.

After every epoch the run directory gets, each file written atomically:

    checkpoint/last.weights.h5, checkpoint/optimizer.npz   weights and optimizer slots
    checkpoint/best.weights.h5                             best validation loss so far
    checkpoint/state.json                                  epoch, history, early-stopping state (last)
    history.csv                                            one row per epoch

Re-running the same job on the same ``out`` resumes after the last completed epoch; a
finished run only re-publishes its bundle. At the end the best weights are restored,
the test split is evaluated and ``model.keras`` (the bundle) is written.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch import __version__
from geoseg_batch.config import TrainJob, resolved
from geoseg_batch.data.chips import ChipCollection, count_split
from geoseg_batch.data.stats import BandStats
from geoseg_batch.errors import ConfigError, DataError
from geoseg_batch.io.publish import atomic_path, write_json
from geoseg_batch.model.bundle import BundleMetadata, normalization_of, save_bundle
from geoseg_batch.model.metrics import metrics_from_confusion

if TYPE_CHECKING:
    from geoseg_batch.training.distributed import Distribution

log = logging.getLogger(__name__)

BUNDLE_NAME = "model.keras"
HISTORY_NAME = "history.csv"
CURVES_NAME = "training_curves.png"
METRIC_KEYS = ("precision", "recall", "f1", "iou")


@dataclass
class TrainState:
    """What a checkpoint records besides weights: enough to continue as if never stopped."""

    epoch: int = 0  # last completed epoch (1-based); 0 = none
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    wait: int = 0
    stopped_early: bool = False

    @classmethod
    def load(cls, path: Path) -> TrainState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


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


class _Loop:
    """The compiled train/eval steps of one model (TF backend), alone or as one replica of a strategy.

    Under a ``tf.distribute`` strategy each replica's loss is divided by the number of
    replicas: the Keras optimizer sums gradients over replicas (an all-reduce), so the
    update is that of the mean loss over the global batch, as in one process.
    """

    def __init__(self, model: Any, optimizer: Any, loss_name: str, classes: int, threshold: float,
                 strategy: Any | None = None) -> None:
        import tensorflow as tf

        from geoseg_batch.model.losses import get_loss
        from geoseg_batch.model.metrics import confusion_matrix

        loss_fn = get_loss(loss_name)
        bands = model.inputs[0].shape[-1]
        signature = [tf.TensorSpec((None, None, None, bands), tf.float32), tf.TensorSpec((None, None, None), tf.int32)]
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                probabilities = model(x, training=True)
                loss = loss_fn(y, probabilities)
                scaled = loss / replicas if replicas > 1 else loss
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss, confusion_matrix(y, probabilities, classes, threshold)

        if strategy is None:
            train_step = tf.function(replica_step, input_signature=signature)
        else:
            @tf.function(input_signature=signature)
            def train_step(x, y):
                loss, matrix = strategy.run(replica_step, args=(x, y))
                matrix = tf.cast(matrix, tf.float32)  # counts per step are far below float32's exact range
                return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                        tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, matrix, axis=None), tf.int64))

        @tf.function(input_signature=signature)
        def eval_step(x, y):
            probabilities = model(x, training=False)
            return loss_fn(y, probabilities), confusion_matrix(y, probabilities, classes, threshold)

        self.train_step, self.eval_step, self.strategy = train_step, eval_step, strategy
        if strategy is not None:
            @tf.function(input_signature=[tf.TensorSpec((None,), tf.float64)])
            def sum_over_replicas(vector):  # compiled once: eager collectives leak threads
                return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(vector,)), axis=None)

            self.sum_over_replicas = sum_over_replicas

    def run_everywhere(self, step: Any, dataset: Any | None, classes: int) -> tuple[float, np.ndarray, int]:
        """Like :meth:`run` over each replica's own ``dataset``, summed over all replicas (one all-reduce)."""
        import tensorflow as tf

        loss, matrix, chips = self.run(step, dataset, classes) if dataset is not None else (0.0, 0, 0)
        local = np.concatenate([[loss * chips if chips else 0.0, chips], np.ravel(matrix) + np.zeros(classes**2)])
        total = self.sum_over_replicas(tf.constant(local, tf.float64)).numpy()
        chips = int(total[1])
        return (total[0] / chips if chips else float("nan")), total[2:].reshape(classes, classes).astype(np.int64), chips

    @staticmethod
    def run(step: Any, dataset: Any, classes: int) -> tuple[float, np.ndarray, int]:
        """(mean loss weighted by batch size, confusion matrix, chips) of one pass."""
        total, chips, matrix = 0.0, 0, np.zeros((classes, classes), np.int64)
        for x, y in dataset:
            loss, counts = step(x, y)
            n = int(x.shape[0])
            total += float(loss) * n
            chips += n
            matrix += counts.numpy()
        return (total / chips if chips else float("nan")), matrix, chips


def _epoch_row(epoch: int, loss: float, matrix: np.ndarray, val: tuple[float, np.ndarray] | None,
               learning_rate: float, seconds: float, classes: tuple[str, ...]) -> dict[str, float]:
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


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _save_checkpoint(directory: Path, model: Any, optimizer: Any, state: TrainState, best: bool) -> None:
    import keras

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "last.weights.h5", ".weights.h5") as tmp:
        model.save_weights(tmp)
    with atomic_path(directory / "optimizer.npz", ".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, *[keras.ops.convert_to_numpy(v) for v in optimizer.variables])
    if best:
        with atomic_path(directory / "best.weights.h5", ".weights.h5") as tmp:
            model.save_weights(tmp)
    write_json(directory / "state.json", state.__dict__)  # last: it marks the epoch complete


def _restore_checkpoint(directory: Path, model: Any, optimizer: Any) -> None:
    model.load_weights(directory / "last.weights.h5")
    with np.load(directory / "optimizer.npz") as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(arrays) != len(optimizer.variables):
        raise DataError(f"{directory}: checkpoint does not match this model; delete it or use another --out")
    for variable, value in zip(optimizer.variables, arrays):
        variable.assign(value)


def fit(job: TrainJob, collection: ChipCollection, stats: BandStats, data_checksum: str,
        distribution: Distribution | None = None) -> FitResult:
    """Train (or resume) one run of ``job`` into ``job.out`` and write its bundle.

    With ``distribution`` this process is one rank of a multi-worker run (see
    :mod:`geoseg_batch.training.distributed`): ``collection`` holds this rank's shards, the
    model and optimizer live in the strategy's scope, every rank runs the same steps and
    takes the same early-stopping decisions from all-reduced validation figures, and only
    the chief writes to ``job.out`` (the others to their scratch directory).
    """
    import contextlib

    import keras

    from geoseg_batch.data.pipeline import Transform, chip_dataset
    from geoseg_batch.model.geometry import model_geometry
    from geoseg_batch.model.unet import build_model

    spec, data = job.train, job.data
    full = distribution.full if distribution else collection
    out = Path(job.out) if distribution is None or distribution.chief else distribution.scratch
    split = {"val_fraction": data.val_fraction, "test_fraction": data.test_fraction, "split_seed": data.split_seed}
    counts = {s: count_split(full, s, data.val_fraction, data.test_fraction, data.split_seed)
              for s in ("train", "val", "test")}
    if counts["train"] == 0:
        raise DataError(f"{collection.path}: no chips in the training split ({full.chips} chips in all)")
    input_size = _model_input_size(job, collection)
    classes = job.model.classes
    strategy = distribution.strategy if distribution else None

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(job.model.model_type, bands=collection.bands, classes=len(classes), depth=job.model.depth,
                            base_filters=job.model.base_filters, batch_norm=job.model.batch_norm,
                            dropout=job.model.dropout, seed=spec.seed)
        optimizer = keras.optimizers.Adam(spec.learning_rate)
        optimizer.build(model.trainable_variables)
    _synchronize_batch_norm(model, distribution is not None)
    checkpoint = out / "checkpoint"
    resume_from = Path(job.out) / "checkpoint"  # every rank continues from the chief's checkpoint
    state = TrainState.load(resume_from / "state.json") or TrainState()
    resumed_from = state.epoch
    if resumed_from:
        _restore_checkpoint(resume_from, model, optimizer)
        log.info("resuming %s after epoch %d of %d", job.out, state.epoch, spec.epochs)

    loop = _Loop(model, optimizer, spec.loss, len(classes), job.model.threshold, strategy)
    world = distribution.world if distribution else 1
    train_data = chip_dataset(collection, Transform.from_stats(stats, spec.augment, spec.jitter, input_size),
                              split="train", **split, batch_size=spec.batch_size // world, shuffle=True,
                              shuffle_buffer=spec.shuffle_buffer, seed=spec.seed + (distribution.rank if distribution
                                                                                     else 0),
                              repeat=distribution is not None)
    if distribution is not None:
        train_data = train_data.take(distribution.steps_per_epoch)
    plain = Transform.from_stats(stats, input_size=input_size)
    local_val = count_split(collection, "val", data.val_fraction, data.test_fraction, data.split_seed)
    val_data = (chip_dataset(collection, plain, split="val", **split, batch_size=spec.batch_size)
                if local_val else None)

    while state.epoch < spec.epochs and not state.stopped_early:
        epoch, started = state.epoch + 1, time.perf_counter()
        loss, matrix, _ = loop.run(loop.train_step, train_data, len(classes))
        val = None
        if distribution is not None and counts["val"]:
            val_loss, val_matrix, _ = loop.run_everywhere(loop.eval_step, val_data, len(classes))
            val = (val_loss, val_matrix)
        elif val_data is not None:
            val_loss, val_matrix, _ = loop.run(loop.eval_step, val_data, len(classes))
            val = (val_loss, val_matrix)
        row = _epoch_row(epoch, loss, matrix, val, float(np.asarray(optimizer.learning_rate.numpy())), time.perf_counter() - started, classes)
        monitored = row.get("val_loss", row["loss"])
        improved = monitored < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_epoch, state.wait = monitored, epoch, 0
        else:
            state.wait += 1
        state.epoch = epoch
        state.history.append(row)
        state.stopped_early = bool(spec.patience and state.wait >= spec.patience and epoch < spec.epochs)
        _write_history(out / HISTORY_NAME, state.history)
        _save_checkpoint(checkpoint, model, optimizer, state, best=improved)
        log.info("epoch %d/%d  %s", epoch, spec.epochs, "  ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k in ("loss", "val_loss", "f1", "val_f1", "val_iou")
        ) + f"  {row['seconds']:.1f}s")
        if state.stopped_early:
            log.info("early stopping: no val_loss improvement for %d epochs (best epoch %d)", spec.patience, state.best_epoch)

    weights_sha256 = weights_digest(model)
    if distribution is not None and not distribution.chief:
        return FitResult(out, None, out / HISTORY_NAME, None, state.epoch, resumed_from, state.best_epoch,
                         state.stopped_early, None, counts, weights_sha256)
    if (checkpoint / "best.weights.h5").exists():
        model.load_weights(checkpoint / "best.weights.h5")
    test_metrics = None
    if counts["test"]:
        test_data = chip_dataset(full, plain, split="test", **split, batch_size=spec.batch_size)
        _, test_matrix, _ = loop.run(loop.eval_step, test_data, len(classes))
        test_metrics = metrics_from_confusion(test_matrix, classes)
        test_metrics["confusion_matrix"] = test_matrix.tolist()

    _synchronize_batch_norm(model, False)  # a bundle must load anywhere, also on backends without the option
    geometry = model_geometry(model)
    metadata = BundleMetadata(
        model_type=job.model.model_type,
        band_names=collection.band_names,
        classes=tuple(classes),
        threshold=job.model.threshold,
        input_size=input_size or collection.chip_shape,
        size_multiple=geometry.size_multiple,
        receptive_radius=geometry.receptive_radius,
        normalization=normalization_of(stats),
        resolution_m=job.data.resolution_m,
        architecture={"depth": job.model.depth, "base_filters": job.model.base_filters,
                      "batch_norm": job.model.batch_norm, "dropout": job.model.dropout},
        provenance={"data": str(full.path), "data_checksum": data_checksum, "split": split,
                    "config": resolved(job), "package_version": __version__, "best_epoch": state.best_epoch,
                    "epochs": state.epoch, "test_metrics": test_metrics, "chips": counts, "workers": world},
    )
    bundle = save_bundle(model, metadata, out / BUNDLE_NAME)
    curves = _plot_curves(out)
    return FitResult(out, bundle, out / HISTORY_NAME, curves, state.epoch, resumed_from, state.best_epoch,
                     state.stopped_early, test_metrics, counts, weights_sha256)


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
