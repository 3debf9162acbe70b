"""The sample grid: image / truth / prediction (/ probability), one row per sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from geoseg_batch.errors import InputError
from geoseg_batch.report.canvas import class_colours, class_legend_handles, new_figure, save_png
from geoseg_batch.report.checks import as_array, class_map, require_positive_int
from geoseg_batch.report.rgb import rgb_band_indices, rgb_composite

_CELL_INCHES = 2.6


@dataclass(frozen=True)
class _Batch:
    """Validated sample arrays: images (N, H, W, C), int64 class maps (N, H, W), probabilities or None."""

    images: np.ndarray
    truths: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None
    names: list[str]


def _validated_batch(images: np.ndarray, truths: np.ndarray, predictions: np.ndarray,
                     band_names: Sequence[str], probabilities: np.ndarray | None) -> _Batch:
    """The arrays checked against each other; raises InputError saying what did not match."""
    images = as_array(images, "images")
    truths = as_array(truths, "truths")
    predictions = as_array(predictions, "predictions")
    names = list(band_names)
    if images.ndim != 4 or min(images.shape, default=0) < 1:
        raise InputError(f"images: received shape {images.shape}, expected (N, H, W, C) with N >= 1")
    n, h, w, c = images.shape
    if c != len(names):
        raise InputError(
            f"images: received shape {images.shape} with {len(names)} band names, "
            f"expected (N, H, W, {len(names)}) to match band_names"
        )
    for name, array in (("truths", truths), ("predictions", predictions)):
        if array.shape != (n, h, w):
            raise InputError(f"{name}: received shape {array.shape}, expected {(n, h, w)} to match images")
    if probabilities is not None:
        probabilities = as_array(probabilities, "probabilities")
        if probabilities.shape != (n, h, w):
            raise InputError(
                f"probabilities: received shape {probabilities.shape}, expected {(n, h, w)} to match images"
            )
        if not np.issubdtype(probabilities.dtype, np.number):
            raise InputError(f"probabilities: received dtype {probabilities.dtype}, expected float")
    return _Batch(images, truths, predictions, probabilities, names)


def _agreement_label(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> str:
    """IoU of class 1 for binary maps, pixel accuracy otherwise, as a short label."""
    if num_classes == 2:
        intersection = np.count_nonzero((truth == 1) & (prediction == 1))
        union = np.count_nonzero((truth == 1) | (prediction == 1))
        return f"IoU {intersection / union:.2f}" if union else "IoU — (no class 1)"
    return f"acc {np.mean(truth == prediction):.2f}"


def _draw_sample_row(row_axes: Sequence[Axes], batch: _Batch, r: int, cmap: ListedColormap,
                     norm: BoundaryNorm) -> AxesImage | None:
    """The probability image of row ``r`` (None without probabilities), after drawing the whole row."""
    num_classes = cmap.N
    row_axes[0].imshow(rgb_composite(batch.images[r], batch.names), interpolation="nearest")
    row_axes[1].imshow(batch.truths[r], cmap=cmap, norm=norm, interpolation="nearest")
    row_axes[2].imshow(batch.predictions[r], cmap=cmap, norm=norm, interpolation="nearest")
    row_axes[0].set_ylabel(f"sample {r}")
    row_axes[2].set_title(
        ("prediction\n" if r == 0 else "") + _agreement_label(batch.truths[r], batch.predictions[r], num_classes),
        fontsize=9,
    )
    probability_image = None
    if batch.probabilities is not None:
        probability_image = row_axes[3].imshow(
            batch.probabilities[r].astype(float), cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest"
        )
    for ax in row_axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return probability_image


def _title_columns(fig: Figure, axes: np.ndarray, names: list[str], probability_image: AxesImage | None) -> None:
    """Return nothing; title the grid's columns and, with probabilities, add their shared colour bar."""
    bands_used = rgb_band_indices(names)
    axes[0, 0].set_title("image\n(" + ",".join(names[i] for i in bands_used) + ")", fontsize=9)
    axes[0, 1].set_title("truth\n", fontsize=9)
    if probability_image is not None:
        axes[0, 3].set_title("probability\n", fontsize=9)
        fig.colorbar(probability_image, ax=list(axes[:, 3]), shrink=0.6, label="probability")


def samples_figure(images: np.ndarray, truths: np.ndarray, predictions: np.ndarray,
                   band_names: Sequence[str], probabilities: np.ndarray | None = None,
                   max_samples: int = 8) -> Figure:
    """The sample grid of :func:`plot_samples`, as a Figure (nothing written)."""
    batch = _validated_batch(images, truths, predictions, band_names, probabilities)
    rows = min(batch.images.shape[0], require_positive_int(max_samples, "max_samples", 1))
    batch = replace(batch, truths=class_map(batch.truths, "truths"),
                    predictions=class_map(batch.predictions, "predictions"))
    n = batch.images.shape[0]
    num_classes = max(2, int(max(batch.truths[:rows].max(), batch.predictions[:rows].max())) + 1)
    cmap, norm = class_colours(num_classes)
    columns = 4 if batch.probabilities is not None else 3
    width = _CELL_INCHES * columns + (0.6 if batch.probabilities is not None else 0.0)
    fig = new_figure(width, _CELL_INCHES * rows + 0.7)
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False))
    probability_image = None
    for r in range(rows):
        probability_image = _draw_sample_row(axes[r], batch, r, cmap, norm)
    _title_columns(fig, axes, batch.names, probability_image)
    fig.legend(handles=class_legend_handles(cmap, num_classes), loc="outside lower center",
               ncols=min(num_classes, 6), fontsize=8)
    shown = f"first {rows} of {n} samples" if rows < n else f"{n} sample{'s' if n > 1 else ''}"
    fig.suptitle(f"Samples: {shown}", fontsize=11)
    return fig


def plot_samples(
    images: np.ndarray,
    truths: np.ndarray,
    predictions: np.ndarray,
    band_names: Sequence[str],
    out_png: Path,
    probabilities: np.ndarray | None = None,
    max_samples: int = 8,
) -> Path:
    """Sample grid; returns ``out_png``.

    One row per sample (the first ``max_samples``), columns: image (RGB composite, see
    :func:`~geoseg_batch.report.rgb.rgb_composite`), truth, prediction (titled with IoU of
    class 1 for binary maps, pixel accuracy otherwise) and, if given, probability (0-1,
    shared colour bar). images (N, H, W, C); truths/predictions (N, H, W) integer class
    maps (ids >= 0); probabilities (N, H, W) float.
    """
    figure = samples_figure(images, truths, predictions, band_names, probabilities, max_samples)
    return save_png(figure, out_png)
