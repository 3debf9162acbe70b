"""Segmentation losses for sparse targets (landslides cover a few % of pixels), keras.ops only.

Each loss takes integer class masks ``y_true`` (batch, rows, cols) and the model's
probabilities ``y_pred`` (batch, rows, cols, 1 | classes) and returns a scalar. Overlap
terms are summed over the whole batch, not per image, so chips without a positive pixel do
not produce 0/0. Multi-class losses average over classes.

- ``dice``: 1 - soft Dice.
- ``bce_dice``: binary (or categorical) cross-entropy + soft Dice.
- ``focal_tversky``: (1 - Tversky index)**gamma with alpha weighting false negatives
  (Abraham & Khan 2019), which favours recall of small objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

from keras import ops

from geoseg_batch.config import LossName

Tensor = Any  # a tensor of whichever backend Keras runs on

LOSSES: tuple[str, ...] = get_args(LossName)
_EPS = 1e-6


def _one_hot(y_true, y_pred):
    """Targets shaped like y_pred: (b, r, c, 1) float for binary, one-hot for multi-class."""
    channels = y_pred.shape[-1]
    y_true = ops.cast(y_true, "int32")
    if channels == 1:
        return ops.cast(ops.expand_dims(y_true, -1) > 0, y_pred.dtype)
    return ops.one_hot(y_true, channels, dtype=y_pred.dtype)


def _overlaps(y_true, y_pred):
    """Per-channel (true positives, false negatives, false positives), summed over batch and pixels."""
    axes = (0, 1, 2)
    tp = ops.sum(y_true * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    return tp, fn, fp


def dice_loss(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """1 - soft Dice, averaged over channels."""
    target = _one_hot(y_true, y_pred)
    tp, fn, fp = _overlaps(target, y_pred)
    return 1.0 - ops.mean((2.0 * tp + _EPS) / (2.0 * tp + fn + fp + _EPS))


def cross_entropy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Pixel-mean binary or categorical cross-entropy of probabilities."""
    target = _one_hot(y_true, y_pred)
    p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
    if y_pred.shape[-1] == 1:
        return -ops.mean(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
    return -ops.mean(ops.sum(target * ops.log(p), axis=-1))


def bce_dice_loss(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Cross-entropy + soft Dice."""
    return cross_entropy(y_true, y_pred) + dice_loss(y_true, y_pred)


def focal_tversky_loss(y_true: Tensor, y_pred: Tensor, alpha: float = 0.7, beta: float = 0.3,
                       gamma: float = 0.75) -> Tensor:
    """(1 - Tversky)**gamma, alpha weighting false negatives and beta false positives."""
    target = _one_hot(y_true, y_pred)
    tp, fn, fp = _overlaps(target, y_pred)
    tversky = (tp + _EPS) / (tp + alpha * fn + beta * fp + _EPS)
    return ops.mean(ops.power(1.0 - tversky, gamma))


def get_loss(name: str) -> Callable:
    """The loss function called ``name`` (one of :data:`LOSSES`)."""
    table = {"dice": dice_loss, "bce_dice": bce_dice_loss, "focal_tversky": focal_tversky_loss}
    if name not in table:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
    return table[name]
