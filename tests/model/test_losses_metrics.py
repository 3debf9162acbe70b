"""Losses and metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg_batch.model.losses import LOSSES, dice_loss, focal_tversky_loss, get_loss
from geoseg_batch.model.metrics import confusion_matrix, metrics_from_confusion


def test_perfect_prediction_has_zero_overlap_losses():
    y = np.zeros((2, 8, 8), np.uint8)
    y[0, 2:5, 2:5] = 1
    p = y[..., None].astype(np.float32)
    assert float(dice_loss(y, p)) == pytest.approx(0.0, abs=1e-5)
    assert float(focal_tversky_loss(y, p)) == pytest.approx(0.0, abs=1e-3)


def test_dice_value_and_ordering():
    y = np.zeros((1, 4, 4), np.uint8)
    y[0, 0, :2] = 1  # 2 positives
    p = np.zeros((1, 4, 4, 1), np.float32)
    p[0, 0, 0, 0] = 1.0  # 1 true positive, 1 false negative
    assert float(dice_loss(y, p)) == pytest.approx(1 - 2 / 3, abs=1e-5)
    worse = np.full((1, 4, 4, 1), 0.5, np.float32)
    for name in LOSSES:
        assert float(get_loss(name)(y, p)) < float(get_loss(name)(y, worse)), name


def test_multiclass_losses_accept_softmax():
    y = np.array([[[0, 1], [2, 2]]], np.uint8)
    p = np.eye(3, dtype=np.float32)[y]
    for name in LOSSES:
        assert float(get_loss(name)(y, p)) < 0.05, name
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("hinge")


def test_confusion_and_metrics_binary():
    y = np.array([[[1, 1, 0, 0, 0]]], np.uint8)
    p = np.array([[[0.9, 0.2, 0.7, 0.1, 0.0]]], np.float32)[..., None]
    matrix = np.asarray(confusion_matrix(y, p, 2, threshold=0.5))
    np.testing.assert_array_equal(matrix, [[2, 1], [1, 1]])
    m = metrics_from_confusion(matrix, ("background", "landslide"))
    assert m["accuracy"] == pytest.approx(0.6)
    assert (m["precision"], m["recall"], m["f1"], m["iou"]) == pytest.approx((0.5, 0.5, 0.5, 1 / 3))
    assert m["per_class"]["background"]["precision"] == pytest.approx(2 / 3)


def test_metrics_multiclass_macro():
    matrix = np.array([[5, 0, 0], [0, 3, 1], [0, 1, 2]])
    m = metrics_from_confusion(matrix)
    assert m["accuracy"] == pytest.approx(10 / 12)
    assert m["f1"] == pytest.approx(np.mean([1.0, 0.75, 2 / 3]))
    y = np.array([[[0, 1, 2]]], np.uint8)
    p = np.eye(3, dtype=np.float32)[[[[0, 2, 2]]]][0]
    np.testing.assert_array_equal(np.asarray(confusion_matrix(y, p, 3)), [[1, 0, 0], [0, 0, 1], [0, 0, 1]])
