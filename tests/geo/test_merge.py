"""Merge rules' building blocks, pure NumPy (no Dask, no stores): confidence, choice, picking, encodings."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg_batch.geo.merge import (
    MERGE_RULES, chosen_layer, confidence, edge_distance, merge_first, merge_layers, merge_max, merge_mean, picked,
    probability_nodata,
)
from geoseg_batch.io.zarr_store import MASK_NODATA, PROBABILITY_NODATA_UINT8


def test_confidence_binary_and_multiclass():
    binary = np.array([[[[0, 125, 250, 200]]]], np.uint8)  # (1 layer, 1 band, 1 row, 4 cols), 0..250
    np.testing.assert_array_equal(confidence(binary), [[[250, 125, 250, 200]]])
    multi = np.array([[[[0.2]], [[0.5]], [[0.3]]]], np.float32)  # (1 layer, 3 classes, 1, 1)
    np.testing.assert_allclose(confidence(multi), [[[0.5]]])
    assert confidence(np.array([[[[0.9]]]], np.float32))[0, 0, 0] == pytest.approx(0.9)


def test_chosen_layer_first_best_valid_and_none():
    score = np.array([[[1.0, 5.0, 2.0]], [[3.0, 5.0, 9.0]]])
    valid = np.array([[[True, True, False]], [[True, True, False]]])
    np.testing.assert_array_equal(chosen_layer(score, valid), [[1, 0, -1]])  # tie -> first; none valid -> -1
    np.testing.assert_array_equal(chosen_layer(np.zeros((0, 2, 2)), np.zeros((0, 2, 2), bool)), -np.ones((2, 2)))


def test_picked_takes_the_chosen_layer_and_nodata_elsewhere():
    probabilities = np.array([[[[10, 20]]], [[[30, 40]]]], np.uint8)
    masks = np.array([[[0, 1]], [[1, 0]]], np.uint8)
    out, mask = picked(probabilities, masks, np.array([[1, -1]]))
    np.testing.assert_array_equal(out, [[[30, PROBABILITY_NODATA_UINT8]]])
    np.testing.assert_array_equal(mask, [[1, MASK_NODATA]])
    out, _ = picked(probabilities.astype(np.float32), masks, np.array([[-1, 0]]))
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == 20


def test_probability_nodata_by_encoding():
    assert probability_nodata("uint8") == PROBABILITY_NODATA_UINT8 and np.isnan(probability_nodata(np.float32))


def test_edge_distance_of_single_row_and_corner_pixels():
    np.testing.assert_array_equal(edge_distance(np.array([0, 0, 0]), np.array([0, 1, 2]), (1, 3)), [1, 1, 1])
    np.testing.assert_array_equal(edge_distance(np.array([2]), np.array([2]), (5, 5)), [3])


def test_rules_agree_when_one_layer_covers_all():
    p = np.array([[[[10, 240]]]], np.uint8)
    m = np.array([[[0, 1]]], np.uint8)
    for rule in MERGE_RULES:
        out, mask = merge_layers(rule, p, m, np.ones((1, 1, 2), np.float32), threshold=0.5)
        np.testing.assert_array_equal(out, p[0])
        np.testing.assert_array_equal(mask, m[0])
    assert merge_first(p, m)[1].dtype == merge_max(p, m)[1].dtype == np.uint8


def test_mean_of_binary_needs_the_threshold():
    p, m = np.zeros((1, 1, 1, 1), np.uint8), np.zeros((1, 1, 1), np.uint8)
    with pytest.raises(ValueError, match="needs the threshold"):
        merge_mean(p, m, np.ones((1, 1, 1), np.float32), threshold=None)
