"""Segmentation metrics from a confusion matrix: accuracy, precision, recall, F1, IoU.

Counting (:func:`confusion_matrix`) runs in the model's backend on each batch; the
metrics themselves (:func:`metrics_from_confusion`) are plain numpy on the accumulated
matrix, so they are exact over a whole split rather than averages of batch metrics.
Binary models report the positive class (class 1); multi-class models report each class
and their macro mean. ``matrix[t, p]`` counts pixels of true class t predicted as p.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from geoseg_batch.model.losses import Tensor


def predicted_classes(y_pred: Tensor, threshold: float = 0.5) -> Tensor:
    """Class ids from probabilities: ``p >= threshold`` for one channel, argmax otherwise."""
    if y_pred.shape[-1] == 1:
        return ops.cast(y_pred[..., 0] >= threshold, "int32")
    return ops.cast(ops.argmax(y_pred, axis=-1), "int32")


def confusion_matrix(y_true: Tensor, y_pred: Tensor, classes: int, threshold: float = 0.5) -> Tensor:
    """(classes, classes) int matrix of one batch; ``y_pred`` are probabilities."""
    truth = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    predicted = ops.reshape(predicted_classes(y_pred, threshold), (-1,))
    flat = truth * classes + predicted
    counts = ops.bincount(flat, minlength=classes * classes)
    return ops.reshape(counts[: classes * classes], (classes, classes))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def class_metrics(matrix: np.ndarray, cls: int) -> dict[str, float]:
    """precision, recall, f1, iou of one class (one-vs-rest)."""
    tp = float(matrix[cls, cls])
    fp = float(matrix[:, cls].sum() - tp)
    fn = float(matrix[cls, :].sum() - tp)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "iou": _ratio(tp, tp + fp + fn),
    }


def metrics_from_confusion(matrix: np.ndarray, class_names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """accuracy plus precision/recall/f1/iou: of class 1 when binary, macro over classes otherwise,
    and ``per_class`` for every class."""
    matrix = np.asarray(matrix, dtype=np.int64)
    classes = matrix.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(classes)]
    per_class = {names[c]: class_metrics(matrix, c) for c in range(classes)}
    if classes == 2:
        headline = per_class[names[1]]
    else:
        headline = {k: float(np.mean([m[k] for m in per_class.values()])) for k in ("precision", "recall", "f1", "iou")}
    return {
        "accuracy": _ratio(np.trace(matrix), matrix.sum()),
        **headline,
        "per_class": per_class,
        "pixels": int(matrix.sum()),
    }
