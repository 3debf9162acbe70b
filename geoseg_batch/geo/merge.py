"""Merge rules: many sources' layers on one mosaic chunk -> one (probabilities, mask). Pure NumPy.

A *layer* is one source resampled onto one chunk: its probabilities (bands, rows, cols) in
the store's encoding (uint8 0..250 with 255 nodata, or float32 with NaN nodata), its class
mask (rows, cols) with MASK_NODATA where the source has no data, and a weight per pixel
(:func:`edge_distance` of the source pixel). Rules see the layers stacked, in source order:

- ``first``: the first source (in order) with data at a pixel gives its probabilities and mask.
- ``max``: the source most confident at a pixel gives them; confidence is ``max(p, 1 - p)``
  of the positive class (binary) or the largest class probability; ties go to the first.
- ``mean``: probabilities are averaged, each source weighted by the distance of its pixel to
  the source raster's edge (in source pixels, plus one), so seams feather; the mask is
  recomputed from the mean (binary: ``p >= threshold``; multi-class: argmax).
"""

from __future__ import annotations

import numpy as np

from geoseg_batch.errors import ConfigError
from geoseg_batch.io.zarr_store import (
    MASK_NODATA, PROBABILITY_NODATA_UINT8, PROBABILITY_SCALE, class_mask, encoded_probabilities,
)

MERGE_RULES = ("max", "first", "mean")


def edge_distance(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance (in pixels, plus one) of pixels (rows, cols) to the edge of a raster of ``shape``."""
    return np.minimum.reduce([rows, cols, shape[0] - 1 - rows, shape[1] - 1 - cols]).astype(np.float32) + 1


def probability_nodata(dtype: np.dtype | str) -> float:
    """The probabilities' nodata value in a store of this dtype."""
    return PROBABILITY_NODATA_UINT8 if np.dtype(dtype) == np.uint8 else np.nan


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """(n, rows, cols): how sure each layer of (n, bands, rows, cols) probabilities is, in their encoding.

    Binary (one band, the positive class): max(p, 1 - p); multi-class: the largest class
    probability. uint8 stays in integer steps, so equal confidences tie exactly.
    """
    full = PROBABILITY_SCALE if probabilities.dtype == np.uint8 else 1.0
    values = probabilities.astype(np.float32)
    if values.shape[1] == 1:
        return np.maximum(values[:, 0], full - values[:, 0])
    return values.max(axis=1)


def chosen_layer(score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(rows, cols): the first layer with the highest ``score`` among the valid ones; -1 where none is."""
    if valid.shape[0] == 0:
        return np.full(valid.shape[1:], -1)
    return np.where(valid.any(axis=0), np.where(valid, score, -np.inf).argmax(axis=0), -1)


def picked(probabilities: np.ndarray, masks: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (bands, rows, cols) and mask (rows, cols) of layer ``chosen`` at each pixel (nodata at -1)."""
    out = np.full(probabilities.shape[1:], probability_nodata(probabilities.dtype), probabilities.dtype)
    mask = np.full(masks.shape[1:], MASK_NODATA, np.uint8)
    for layer in range(probabilities.shape[0]):
        here = chosen == layer
        out[:, here] = probabilities[layer][:, here]
        mask[here] = masks[layer][here]
    return out, mask


def merge_first(probabilities: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule ``first`` over layers (n, bands, rows, cols) and masks (n, rows, cols): (probabilities, mask)."""
    valid = masks != MASK_NODATA
    return picked(probabilities, masks, chosen_layer(np.zeros(valid.shape), valid))


def merge_max(probabilities: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule ``max`` (see :func:`confidence`) over layers; returns (probabilities, mask)."""
    return picked(probabilities, masks, chosen_layer(confidence(probabilities), masks != MASK_NODATA))


def merge_mean(probabilities: np.ndarray, masks: np.ndarray, weights: np.ndarray,
               threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Rule ``mean``: weighted mean of the valid layers' probabilities, mask recomputed from it.

    ``threshold`` (the positive-class threshold) is needed for binary probabilities only.
    The result is encoded like the input (uint8 0..250 or float32).
    """
    binary = probabilities.shape[1] == 1
    if binary and threshold is None:
        raise ValueError("merge_mean of binary probabilities needs the threshold")
    valid = masks != MASK_NODATA
    weights = np.where(valid, weights, 0.0)
    full = PROBABILITY_SCALE if probabilities.dtype == np.uint8 else 1.0
    values = np.where(valid[:, None], probabilities, 0).astype(np.float64) / full
    total = weights.sum(axis=0)
    covered = total > 0
    mean = np.moveaxis((values * weights[:, None]).sum(axis=0) / np.where(covered, total, 1.0), 0, -1)
    float_output = probabilities.dtype != np.uint8
    return (encoded_probabilities(mean, covered, binary, float_output),
            class_mask(mean, covered, threshold if binary else 0.0, binary))  # multi-class: argmax, no threshold


def merge_layers(rule: str, probabilities: np.ndarray, masks: np.ndarray, weights: np.ndarray,
                 threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge layers (n, bands, rows, cols) by ``rule`` (one of MERGE_RULES): (probabilities, mask)."""
    if rule == "first":
        return merge_first(probabilities, masks)
    if rule == "max":
        return merge_max(probabilities, masks)
    if rule == "mean":
        return merge_mean(probabilities, masks, weights, threshold)
    raise ConfigError(f"merge rule {rule!r} unknown; expected one of {', '.join(MERGE_RULES)}")
