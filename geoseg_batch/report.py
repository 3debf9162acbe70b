"""Quicklook PNGs for training, evaluation and prediction runs; the HTML run report.

Each ``plot_*`` function draws one figure with matplotlib's object API on an explicit
Agg canvas (no pyplot, no global state), writes it atomically (a temporary file in the
same directory, then :func:`os.replace`) and returns the path written. Parent
directories are created; an existing PNG at that path is replaced.

- :func:`plot_training_curves`: loss and metric curves per epoch from a history CSV.
- :func:`plot_confusion_matrix`: counts and row-normalized percentages per cell.
- :func:`plot_pr_curve`: precision-recall curve with the best-F1 threshold marked.
- :func:`plot_samples`: image / truth / prediction (/ probability) grid, one row per sample.
- :func:`rgb_composite` (and :func:`rgb_band_indices`): a displayable RGB from a
  multi-band chip.
- :func:`quicklook_png`: a scene (RGB composite), probabilities (0-1 colour map) or class
  mask of a raster file, read decimated (``out_shape``, so COG overviews serve it): never
  at full resolution. :func:`prediction_quicklooks` makes all three for a predict output.
- :func:`write_run_report`: one self-contained HTML page per run (summary, metrics,
  quicklooks embedded as data URIs, resolved config), written atomically.

Inputs are validated at the edge: wrong shapes raise :class:`~geoseg_batch.errors.InputError`
(a ``ValueError``) saying what was received and what was expected.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from geoseg_batch.errors import DataError, InputError, MissingInputError

log = logging.getLogger(__name__)

__all__ = [
    "plot_confusion_matrix",
    "plot_pr_curve",
    "plot_samples",
    "plot_training_curves",
    "prediction_quicklooks",
    "quicklook_png",
    "rgb_band_indices",
    "rgb_composite",
    "write_run_report",
]

DPI = 110
"""Resolution of every PNG written here."""

# History columns that are neither losses nor quality metrics: left off the plots.
_NON_METRIC_COLUMNS = frozenset({"epoch", "learning_rate", "lr", "seconds", "time", "duration"})

# Class-map colours: background dark grey, landslide orange-red, then distinct hues.
_CLASS_COLOURS = (
    "#303030", "#ff5a1f", "#1f9bff", "#4fd14f", "#d14fd1",
    "#ffd21f", "#1fffd2", "#8c564b", "#bcbd22", "#e377c2",
)


# --------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to its own Agg canvas, laid out with constrained layout."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png_atomic(fig: Figure, out_png: Path) -> Path:
    """Render ``fig`` as PNG to a temp file beside ``out_png``, then move it into place."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would stick to the PNG; this honours the umask.
    tmp_name = out_png.parent / f".{out_png.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.replace(tmp_name, out_png)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return out_png


def _as_array(value: object, name: str) -> np.ndarray:
    """``np.asarray`` that reports what it received when it cannot convert."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected an array, received {type(value).__name__} ({exc})") from exc


def _require_ndim(array: np.ndarray, ndim: int, name: str, expected: str) -> None:
    """Raise InputError unless ``array`` has ``ndim`` dimensions."""
    if array.ndim != ndim:
        raise InputError(f"{name}: received shape {array.shape}, expected {expected}")


def _class_map(array: np.ndarray, name: str) -> np.ndarray:
    """Validate an integer class map (bool, int, or integer-valued float) and return it as int64."""
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.integer):
        result = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputError(
                f"{name}: received non-integer or non-finite values, expected integer class ids"
            )
        result = array.astype(np.int64)
    else:
        raise InputError(f"{name}: received dtype {array.dtype}, expected integer class ids")
    if result.size and result.min() < 0:
        raise InputError(f"{name}: received class id {int(result.min())}, expected ids >= 0")
    return result


# --------------------------------------------------------------------------- training curves


def _read_history(history_csv: Path) -> dict[str, np.ndarray]:
    """Columns of a Keras CSVLogger-style history as float arrays, sorted by epoch.

    Empty cells become NaN; when an epoch appears more than once (a resumed run that
    appended), the later row wins.
    """
    if not history_csv.is_file():
        raise MissingInputError(f"training history {history_csv}: file not found")
    with history_csv.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"training history {history_csv}: file is empty, expected a CSV header")
        header = [column.strip() for column in header]
        if "epoch" not in header:
            raise DataError(
                f"training history {history_csv}: received columns {header}, expected an 'epoch' column"
            )
        rows: list[list[float]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"training history {history_csv} line {line_no}: received {len(row)} fields, "
                    f"expected {len(header)} (one per header column)"
                )
            values: list[float] = []
            for column, cell in zip(header, row):
                cell = cell.strip()
                try:
                    values.append(float(cell) if cell else math.nan)
                except ValueError:
                    raise DataError(
                        f"training history {history_csv} line {line_no} column {column!r}: "
                        f"received {cell!r}, expected a number"
                    ) from None
            rows.append(values)
    if not rows:
        raise DataError(f"training history {history_csv}: received no epoch rows, expected at least one")
    table = np.asarray(rows, dtype=float)
    epoch_index = header.index("epoch")
    # Keep the last row for each epoch, then order by epoch.
    last_row_of_epoch: dict[float, int] = {}
    for i, epoch in enumerate(table[:, epoch_index]):
        last_row_of_epoch[float(epoch)] = i
    keep = sorted(last_row_of_epoch.values(), key=lambda i: table[i, epoch_index])
    table = table[keep]
    return {column: table[:, j] for j, column in enumerate(header)}


def _base_name(column: str) -> str:
    """``val_f1`` -> ``f1``; ``f1`` -> ``f1``."""
    return column[4:] if column.startswith("val_") else column


def _plot_series_panel(ax, epochs: np.ndarray, columns: dict[str, np.ndarray], empty_text: str) -> None:
    """Draw train (dashed) and val (solid) series, one colour per base name."""
    if not columns:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    palette = colormaps["tab10"].colors
    bases = list(dict.fromkeys(_base_name(c) for c in columns))
    marker = "o" if len(epochs) <= 30 else None
    for column, values in columns.items():
        colour = palette[bases.index(_base_name(column)) % len(palette)]
        is_val = column.startswith("val_")
        ax.plot(
            epochs, values, color=colour, linestyle="-" if is_val else "--", marker=marker,
            markersize=3, linewidth=1.8 if is_val else 1.2, alpha=1.0 if is_val else 0.8,
            label=f"{_base_name(column)} ({'val' if is_val else 'train'})",
        )


def _mark_best(ax, epochs: np.ndarray, values: np.ndarray, column: str, lowest: bool) -> None:
    """Star the best epoch of ``column`` (lowest or highest finite value)."""
    finite = np.isfinite(values)
    if not finite.any():
        return
    candidates = np.where(finite, values, np.inf if lowest else -np.inf)
    i = int(np.argmin(candidates) if lowest else np.argmax(candidates))
    ax.plot(
        [epochs[i]], [values[i]], marker="*", markersize=13, color="black", linestyle="none",
        label=f"best {column} {values[i]:.3g} @ epoch {epochs[i]:g}", zorder=5,
    )


def plot_training_curves(history_csv: Path, out_png: Path) -> Path:
    """Loss and metric curves per epoch from a training history CSV; returns ``out_png``.

    history CSV columns: epoch, then any of loss, val_loss, and metric columns such as
    precision, recall, f1, iou, val_precision, val_recall, val_f1, val_iou, learning_rate, seconds.
    Two panels: losses (every ``*loss`` column, train dashed vs val solid) and metrics
    (every other column except epoch, learning_rate/lr and seconds/time), per epoch.
    The best ``val_loss`` and the best ``val_f1`` (else ``val_iou``) epochs are starred.
    Empty cells are gaps; duplicated epochs (an appended, resumed run) keep the last row.

    Raises MissingInputError if the CSV does not exist, DataError if it is malformed.
    """
    history_csv = Path(history_csv)
    history = _read_history(history_csv)
    epochs = history["epoch"]
    losses = {c: v for c, v in history.items() if c.endswith("loss")}
    metrics = {
        c: v for c, v in history.items()
        if c not in _NON_METRIC_COLUMNS and not c.endswith("loss")
    }
    # Val before train within each panel so the legend reads val first.
    losses = dict(sorted(losses.items(), key=lambda kv: not kv[0].startswith("val_")))
    metrics = dict(sorted(metrics.items(), key=lambda kv: not kv[0].startswith("val_")))

    fig = _new_figure(11.0, 4.2)
    ax_loss, ax_metric = fig.subplots(1, 2)
    _plot_series_panel(ax_loss, epochs, losses, "no loss columns in history")
    if "val_loss" in losses:
        _mark_best(ax_loss, epochs, losses["val_loss"], "val_loss", lowest=True)
    _plot_series_panel(ax_metric, epochs, metrics, "no metric columns in history")
    for key in ("val_f1", "val_iou"):
        if key in metrics:
            _mark_best(ax_metric, epochs, metrics[key], key, lowest=False)
            break
    if metrics:
        stacked = np.concatenate(list(metrics.values()))
        finite = stacked[np.isfinite(stacked)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            ax_metric.set_ylim(0.0, 1.02)

    ax_loss.set_title("Loss")
    ax_metric.set_title("Metrics")
    for ax in (ax_loss, ax_metric):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="best")
    fig.suptitle(f"Training history: {history_csv.name} ({len(epochs)} epochs)")
    return _save_png_atomic(fig, out_png)


# --------------------------------------------------------------------------- confusion matrix


def _format_count(value: float, integral: bool) -> str:
    """Counts with thousands separators; non-integral values with 3 significant digits."""
    return f"{int(round(value)):,}" if integral else f"{value:.3g}"


def _format_percent(fraction: float) -> str:
    """Row fraction as a percentage that never rounds a nonzero share to 0% or 100%."""
    if math.isnan(fraction):
        return "—"
    pct = 100.0 * fraction
    if 0.0 < pct < 0.1:
        return "<0.1%"
    if 99.9 < pct < 100.0:
        return ">99.9%"
    return f"{pct:.1f}%"


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], out_png: Path) -> Path:
    """Confusion-matrix heatmap; returns ``out_png``.

    ``matrix`` is (K, K) with K >= 2, rows the true class and columns the predicted one,
    in the order of ``class_names``. Counts and row-normalized percentages in each cell;
    colour is the row fraction (a class with no true pixels shows "—").
    """
    matrix = _as_array(matrix, "confusion matrix")
    names = [str(n) for n in class_names]
    k = len(names)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise InputError(f"confusion matrix: received shape {matrix.shape}, expected (K, K) with K >= 2")
    if matrix.shape[0] != k:
        raise InputError(
            f"confusion matrix: received shape {matrix.shape} and {k} class names, "
            f"expected ({k}, {k}) to match the class names"
        )
    if not np.issubdtype(matrix.dtype, np.number) and matrix.dtype != bool:
        raise InputError(f"confusion matrix: received dtype {matrix.dtype}, expected numeric counts")
    counts = matrix.astype(float)
    if not np.all(np.isfinite(counts)) or counts.min() < 0:
        raise InputError("confusion matrix: received negative or non-finite values, expected counts >= 0")
    integral = bool(np.all(counts == np.round(counts)))
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(row_sums > 0, counts / np.where(row_sums > 0, row_sums, 1.0), np.nan)

    side = max(4.5, 0.95 * k + 2.5)
    fig = _new_figure(side + 1.8, side)  # aspect="auto" below: layout stays robust to long labels
    ax = fig.subplots()
    image = ax.imshow(np.nan_to_num(fractions, nan=0.0), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    cell_font = max(6.0, 11.0 - 0.4 * k)
    for i in range(k):
        for j in range(k):
            fraction = fractions[i, j]
            colour = "white" if (not math.isnan(fraction) and fraction > 0.55) else "black"
            ax.text(
                j, i, f"{_format_count(counts[i, j], integral)}\n{_format_percent(fraction)}",
                ha="center", va="center", color=colour, fontsize=cell_font,
            )
    ax.set_xticks(range(k), labels=names)
    ax.set_yticks(range(k), labels=names)
    if k * max(len(n) for n in names) > 36:  # labels would run into each other
        for label in ax.get_xticklabels():
            label.set_rotation(35)
            label.set_horizontalalignment("right")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = counts.sum()
    accuracy = np.trace(counts) / total if total > 0 else math.nan
    ax.set_title(
        f"Confusion matrix\nn = {_format_count(total, integral)}, accuracy {_format_percent(accuracy)}"
    )
    fig.colorbar(image, ax=ax, label="fraction of true class (row)")
    return _save_png_atomic(fig, out_png)


# --------------------------------------------------------------------------- precision-recall


def plot_pr_curve(
    precision: np.ndarray,
    recall: np.ndarray,
    thresholds: np.ndarray,
    best_threshold: float,
    out_png: Path,
) -> Path:
    """Precision-recall curve with the best-F1 point marked; returns ``out_png``.

    ``precision``, ``recall`` are 1-D of length N >= 1; ``thresholds`` has length N, or
    N - 1 as from scikit-learn's ``precision_recall_curve`` (its last point has no
    threshold). The marked point is the one whose threshold is nearest ``best_threshold``;
    it is labelled with that threshold and the F1 there. Faint iso-F1 lines give scale.
    """
    precision = _as_array(precision, "precision").astype(float)
    recall = _as_array(recall, "recall").astype(float)
    thresholds = _as_array(thresholds, "thresholds").astype(float)
    _require_ndim(precision, 1, "precision", "(N,) with N >= 1")
    _require_ndim(recall, 1, "recall", f"({precision.shape[0]},) like precision")
    _require_ndim(thresholds, 1, "thresholds", f"({precision.shape[0]},) or ({precision.shape[0] - 1},)")
    n = precision.shape[0]
    if n < 1:
        raise InputError(f"precision: received shape {precision.shape}, expected (N,) with N >= 1")
    if recall.shape != precision.shape:
        raise InputError(f"recall: received shape {recall.shape}, expected ({n},) like precision")
    if thresholds.shape[0] not in (n, n - 1) or thresholds.shape[0] < 1:
        raise InputError(
            f"thresholds: received shape {thresholds.shape}, expected ({n},) or ({n - 1},) "
            f"for {n} precision/recall points"
        )
    best_threshold = float(best_threshold)
    if not math.isfinite(best_threshold):
        raise InputError(f"best_threshold: received {best_threshold}, expected a finite number")
    distance = np.abs(thresholds - best_threshold)
    if not np.isfinite(distance).any():
        raise InputError("thresholds: received no finite values, expected at least one")
    best = int(np.nanargmin(np.where(np.isfinite(distance), distance, np.nan)))
    p_best, r_best = precision[best], recall[best]
    f1_best = 2 * p_best * r_best / (p_best + r_best) if (p_best + r_best) > 0 else 0.0

    fig = _new_figure(6.2, 5.6)
    ax = fig.subplots()
    grid = np.linspace(0.01, 1.0, 200)
    for f_score in (0.2, 0.4, 0.6, 0.8):
        with np.errstate(divide="ignore", invalid="ignore"):
            iso_precision = f_score * grid / (2 * grid - f_score)
        visible = (iso_precision > 0) & (iso_precision <= 1.05)
        ax.plot(grid[visible], iso_precision[visible], color="grey", alpha=0.3, linewidth=0.8)
        ax.annotate(f"F1={f_score:.1f}", xy=(0.93, f_score * 0.93 / (1.86 - f_score) + 0.015),
                    color="grey", alpha=0.7, fontsize=7)
    # Plotted in the given (threshold) order: sorting by recall would zigzag within ties.
    ax.plot(recall, precision, color="#1f77b4", linewidth=2, label="precision-recall")
    ax.plot([r_best], [p_best], marker="o", markersize=9, color="#d62728", linestyle="none",
            label=f"best F1 {f1_best:.3f} at threshold {best_threshold:.3g}", zorder=5)
    # Put the label on the side of the point facing the middle of the plot.
    dx = -20 if r_best > 0.5 else 20
    dy = -30 if p_best > 0.5 else 30
    ax.annotate(
        f"threshold {best_threshold:.3g}\nF1 {f1_best:.3f}",
        xy=(r_best, p_best), xytext=(dx, dy), textcoords="offset points",
        ha="right" if dx < 0 else "left", va="top" if dy < 0 else "bottom", fontsize=9,
        bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "#d62728", "alpha": 0.9},
        arrowprops={"arrowstyle": "-", "color": "#d62728"},
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall curve")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return _save_png_atomic(fig, out_png)


# --------------------------------------------------------------------------- RGB composite


def _find_band(names: Sequence[str], pattern: str) -> int | None:
    """Index of the first band whose name fully matches ``pattern`` (case-insensitive)."""
    regex = re.compile(pattern, re.IGNORECASE)
    for i, name in enumerate(names):
        if regex.fullmatch(str(name).strip()):
            return i
    return None


def rgb_band_indices(band_names: Sequence[str]) -> tuple[int, int, int]:
    """Band indices used as (red, green, blue) by :func:`rgb_composite`.

    Sentinel-2 B4, B3, B2 (also spelled B04, B03, B02) when all three are present; else
    bands named red, green, blue; else the first three bands; with fewer than three
    bands, the first band for all three channels (grey).
    """
    names = list(band_names)
    if not names:
        raise InputError("band_names: received none, expected one name per band")
    for patterns in ((r"B0?4", r"B0?3", r"B0?2"), (r"red", r"green", r"blue")):
        found = [_find_band(names, p) for p in patterns]
        if all(i is not None for i in found):
            return (found[0], found[1], found[2])  # type: ignore[return-value]
    if len(names) >= 3:
        return (0, 1, 2)
    return (0, 0, 0)


def _stretch(channel: np.ndarray) -> np.ndarray:
    """2-98 percentile stretch to [0, 1]; non-finite pixels 0, a flat channel 0.5."""
    finite = np.isfinite(channel)
    out = np.zeros(channel.shape, dtype=np.float32)
    if not finite.any():
        return out
    lo, hi = np.percentile(channel[finite], [2.0, 98.0])
    if hi > lo:
        out[finite] = np.clip((channel[finite] - lo) / (hi - lo), 0.0, 1.0)
    else:
        out[finite] = 0.5  # flat band: mid-grey, so it reads as flat rather than missing
    return out


def rgb_composite(image: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    """(H, W, C) -> (H, W, 3) float32 in [0, 1] for display.

    Bands B4,B3,B2 when present (Sentinel-2 names), else red/green/blue-named bands, else
    the first three bands (one or two bands -> grey from the first); see
    :func:`rgb_band_indices`. Each channel gets a 2-98 percentile stretch over its finite
    pixels; NaN/inf pixels come out 0 and a constant channel 0.5.
    """
    image = _as_array(image, "image")
    names = list(band_names)
    if image.ndim != 3 or image.shape[2] < 1:
        raise InputError(f"image: received shape {image.shape}, expected (H, W, C)")
    if image.shape[2] != len(names):
        raise InputError(
            f"image: received shape {image.shape} with {len(names)} band names, "
            f"expected (H, W, {len(names)}) to match band_names"
        )
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise InputError(f"image: received dtype {image.dtype}, expected numeric")
    indices = rgb_band_indices(names)
    channels = [_stretch(image[:, :, i].astype(np.float64)) for i in indices]
    return np.stack(channels, axis=-1)


# --------------------------------------------------------------------------- sample grid


def _class_colours(num_classes: int) -> tuple[ListedColormap, BoundaryNorm]:
    """A discrete colormap and norm for class ids 0..num_classes-1."""
    if num_classes <= len(_CLASS_COLOURS):
        colours = list(_CLASS_COLOURS[:num_classes])
    else:
        colours = [colormaps["turbo"](x) for x in np.linspace(0.0, 1.0, num_classes)]
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(num_classes + 1) - 0.5, num_classes)
    return cmap, norm


def _agreement_label(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> str:
    """IoU of class 1 for binary maps, pixel accuracy otherwise."""
    if num_classes == 2:
        intersection = np.count_nonzero((truth == 1) & (prediction == 1))
        union = np.count_nonzero((truth == 1) | (prediction == 1))
        return f"IoU {intersection / union:.2f}" if union else "IoU — (no class 1)"
    return f"acc {np.mean(truth == prediction):.2f}"


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
    :func:`rgb_composite`), truth, prediction (titled with IoU of class 1 for binary maps,
    pixel accuracy otherwise) and, if given, probability (0-1, shared colour bar).
    images (N, H, W, C); truths/predictions (N, H, W) integer class maps (ids >= 0);
    probabilities (N, H, W) float.
    """
    images = _as_array(images, "images")
    truths = _as_array(truths, "truths")
    predictions = _as_array(predictions, "predictions")
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
        probabilities = _as_array(probabilities, "probabilities")
        if probabilities.shape != (n, h, w):
            raise InputError(
                f"probabilities: received shape {probabilities.shape}, expected {(n, h, w)} to match images"
            )
        if not np.issubdtype(probabilities.dtype, np.number):
            raise InputError(f"probabilities: received dtype {probabilities.dtype}, expected float")
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise InputError(f"max_samples: received {max_samples!r}, expected an integer >= 1")
    truths = _class_map(truths, "truths")
    predictions = _class_map(predictions, "predictions")

    rows = min(n, int(max_samples))
    num_classes = max(2, int(max(truths[:rows].max(), predictions[:rows].max())) + 1)
    cmap, norm = _class_colours(num_classes)
    columns = 4 if probabilities is not None else 3
    cell = 2.6
    fig = _new_figure(cell * columns + (0.6 if probabilities is not None else 0.0), cell * rows + 0.7)
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False))
    probability_image = None
    for r in range(rows):
        row_axes = axes[r]
        row_axes[0].imshow(rgb_composite(images[r], names), interpolation="nearest")
        row_axes[1].imshow(truths[r], cmap=cmap, norm=norm, interpolation="nearest")
        row_axes[2].imshow(predictions[r], cmap=cmap, norm=norm, interpolation="nearest")
        row_axes[0].set_ylabel(f"sample {r}")
        row_axes[2].set_title(
            ("prediction\n" if r == 0 else "") + _agreement_label(truths[r], predictions[r], num_classes),
            fontsize=9,
        )
        if probabilities is not None:
            probability_image = row_axes[3].imshow(
                probabilities[r].astype(float), cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest"
            )
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
    bands_used = rgb_band_indices(names)
    axes[0, 0].set_title("image\n(" + ",".join(names[i] for i in bands_used) + ")", fontsize=9)
    axes[0, 1].set_title("truth\n", fontsize=9)
    if probabilities is not None:
        axes[0, 3].set_title("probability\n", fontsize=9)
        fig.colorbar(probability_image, ax=list(axes[:, 3]), shrink=0.6, label="probability")
    handles = [Patch(facecolor=cmap(i), edgecolor="black", label=f"class {i}") for i in range(num_classes)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(num_classes, 6), fontsize=8)
    shown = f"first {rows} of {n} samples" if rows < n else f"{n} sample{'s' if n > 1 else ''}"
    fig.suptitle(f"Samples: {shown}", fontsize=11)
    return _save_png_atomic(fig, out_png)


# --------------------------------------------------------------------------- raster quicklooks

QuicklookKind = Literal["scene", "probabilities", "mask"]
_QUICKLOOK_KINDS = ("scene", "probabilities", "mask")
_NODATA_BACKGROUND = "#d9d9d9"  # light grey shows through transparent (nodata) pixels


def _decimated_shape(rows: int, cols: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) scaled so the longer side is at most ``max_side`` (never enlarged)."""
    scale = max(rows, cols) / max_side
    if scale <= 1.0:
        return rows, cols
    return max(1, round(rows / scale)), max(1, round(cols / scale))


def _open_raster(raster: Path):
    """rasterio dataset of ``raster``, with the input errors said plainly."""
    import rasterio

    if raster.is_dir():
        raise InputError(
            f"quicklook {raster}: received a directory (a zarr store?), expected a raster file; "
            "pass the COG written beside it (<scene>_mask.tif or <scene>_probabilities.tif)"
        )
    if not raster.exists():
        raise MissingInputError(f"quicklook {raster}: file not found")
    try:
        return rasterio.open(raster)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"quicklook {raster}: not a raster GDAL can read ({exc})") from exc


def _read_decimated(src, indexes: list[int], shape: tuple[int, int], resampling) -> np.ndarray:
    """Bands ``indexes`` (1-based) at ``shape`` as float64 (bands, rows, cols), NaN where nodata/masked.

    ``out_shape`` makes GDAL read from the best overview (COGs have them) instead of the
    full-resolution image; the full-resolution array never exists here.
    """
    data = src.read(indexes, out_shape=(len(indexes), *shape), resampling=resampling, masked=True)
    return np.ma.filled(data.astype(np.float64), np.nan)


def _quicklook_figure(shape: tuple[int, int], side_panel: bool) -> tuple[Figure, Any]:
    """A figure whose axes show ``shape`` pixels at about one screen pixel each."""
    rows, cols = shape
    width = max(cols / DPI, 3.2) + (1.3 if side_panel else 0.2)
    height = max(rows / DPI, 2.0) + 0.7
    fig = _new_figure(width, height)
    ax = fig.subplots()
    ax.set_facecolor(_NODATA_BACKGROUND)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig, ax


def _scene_quicklook(src, shape: tuple[int, int], ax) -> str:
    from rasterio.enums import Resampling

    names = [d or f"band {i + 1}" for i, d in enumerate(src.descriptions)]
    picked = rgb_band_indices(names)
    unique = sorted(set(picked))
    bands = _read_decimated(src, [i + 1 for i in unique], shape, Resampling.average)
    stack = np.stack([bands[unique.index(i)] for i in picked], axis=-1)  # (rows, cols, 3) red, green, blue
    rgb = rgb_composite(stack, ("red", "green", "blue"))
    alpha = np.any(np.isfinite(stack), axis=-1).astype(np.float32)  # nodata in every band: transparent
    ax.imshow(np.concatenate([rgb, alpha[..., None]], axis=-1))
    shown = ",".join(dict.fromkeys(names[i] for i in picked))
    return f"RGB = {shown}, 2-98% stretch"


def _probabilities_quicklook(src, shape: tuple[int, int], fig: Figure, ax) -> str:
    from rasterio.enums import Resampling

    from geoseg_batch.io.zarr_store import PROBABILITY_SCALE

    values = _read_decimated(src, list(range(1, src.count + 1)), shape, Resampling.average)
    if np.issubdtype(np.dtype(src.dtypes[0]), np.integer):  # uint8 0..250 encoding (255 nodata, masked above)
        values = np.clip(values / PROBABILITY_SCALE, 0.0, 1.0)
    if values.shape[0] > 1:
        with np.errstate(all="ignore"):
            shown = np.where(np.isfinite(values).any(axis=0), np.nanmax(np.nan_to_num(values, nan=-np.inf), axis=0),
                             np.nan)
        label = "max class probability"
    else:
        shown, label = values[0], "probability"
    cmap = colormaps["magma"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    return label


def _mask_quicklook(src, shape: tuple[int, int], fig: Figure, ax) -> str:
    from rasterio.enums import Resampling

    classes = _read_decimated(src, [1], shape, Resampling.nearest)[0]
    finite = np.isfinite(classes)
    top = int(classes[finite].max()) if finite.any() else 1
    num_classes = max(2, top + 1)
    cmap, norm = _class_colours(num_classes)
    cmap = cmap.with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    ax.imshow(np.ma.masked_invalid(classes), cmap=cmap, norm=norm, interpolation="nearest")
    handles = [Patch(facecolor=cmap(i), edgecolor="black", label=f"class {i}") for i in range(num_classes)]
    handles.append(Patch(facecolor=_NODATA_BACKGROUND, edgecolor="black", label="nodata"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return f"{num_classes} classes"


def quicklook_png(raster: Path, out_png: Path, kind: QuicklookKind, max_side: int = 768) -> Path:
    """A PNG of ``raster`` with its longer side at most ``max_side`` pixels; returns ``out_png``.

    The raster (any file rasterio opens: GeoTIFF, COG) is read decimated with
    ``out_shape=``, which GDAL serves from overviews when present: never at full resolution.

    - ``"scene"``: RGB composite of three bands (chosen by :func:`rgb_band_indices` from the
      band descriptions) with the 2-98 percentile stretch of :func:`rgb_composite`.
    - ``"probabilities"``: a 0..1 colour map (uint8 values are the 0..250 encoding; with
      several bands, the highest class probability).
    - ``"mask"``: discrete class colours, as in :func:`plot_samples`.

    Nodata (the file's nodata value or mask, and NaN) is transparent over light grey.
    A zarr store is refused: pass the COG written beside it.
    """
    raster = Path(raster)
    if kind not in _QUICKLOOK_KINDS:
        raise InputError(f"quicklook kind: received {kind!r}, expected one of {', '.join(_QUICKLOOK_KINDS)}")
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 16:
        raise InputError(f"max_side: received {max_side!r}, expected an integer >= 16")
    with _open_raster(raster) as src:
        shape = _decimated_shape(src.height, src.width, int(max_side))
        fig, ax = _quicklook_figure(shape, side_panel=kind != "scene")
        if kind == "scene":
            detail = _scene_quicklook(src, shape, ax)
        elif kind == "probabilities":
            detail = _probabilities_quicklook(src, shape, fig, ax)
        else:
            detail = _mask_quicklook(src, shape, fig, ax)
        size = f"{src.width}x{src.height} px" + (f", shown at {shape[1]}x{shape[0]}" if shape != src.shape else "")
    ax.set_title(f"{raster.name}: {kind}\n{detail}\n{size}", fontsize=8)
    return _save_png_atomic(fig, out_png)


QUICKLOOK_SOURCES = {"scene": "scene", "probabilities": "probability_cog", "mask": "mask_cog"}  # kind: output key


def prediction_quicklooks(output: Mapping[str, Any], out_dir: Path, max_side: int = 768,
                          name: str | None = None, kinds: tuple[str, ...] = tuple(QUICKLOOK_SOURCES)
                          ) -> list[tuple[str, Path]]:
    """Quicklooks of one predict (or mosaic) output entry (keys ``scene``, ``mask_cog``, ``probability_cog``).

    Writes ``<name>_scene.png``, ``<name>_probabilities.png``, ``<name>_mask.png`` in
    ``out_dir`` for the ``kinds`` whose keys are present (and not None); ``name`` defaults to
    the scene's file stem. Returns ``(caption, png)`` pairs ready for :func:`write_run_report`.
    """
    out_dir = Path(out_dir)
    stem = name or Path(str(output["scene"])).stem
    made: list[tuple[str, Path]] = []
    for kind in kinds:
        key = QUICKLOOK_SOURCES[kind]
        source = output.get(key)
        if source and kind == "scene" and not _cheap_to_decimate(Path(source)):
            log.info("quicklook of %s skipped: no overviews and too large to decimate cheaply "
                     "(add them with `gdaladdo`)", source)
            continue
        if source:
            png = quicklook_png(Path(source), out_dir / f"{stem}_{kind}.png", kind, max_side)  # type: ignore[arg-type]
            made.append((f"{stem}: {kind} ({Path(source).name})", png))
    return made


QUICKLOOK_FULL_READ_PIXELS = 16_000_000  # a raster without overviews is read whole to decimate it


def _cheap_to_decimate(raster: Path) -> bool:
    """Whether a decimated read is cheap: the raster has overviews, or is small enough to read whole."""
    import rasterio

    with rasterio.open(raster) as src:
        return bool(src.overviews(1)) or src.width * src.height <= QUICKLOOK_FULL_READ_PIXELS


# --------------------------------------------------------------------------- HTML run report

_REPORT_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { text-align: left; padding: 0.25em 0.8em; border-bottom: 1px solid #eee; vertical-align: top; }
th { font-weight: 600; color: #444; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.nested th, table.nested td { border: none; padding: 0.05em 0.6em 0.05em 0; font-size: 0.95em; }
.images { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
pre { background: #f6f8fa; padding: 0.8em 1em; overflow-x: auto; font-size: 0.9em; border-radius: 4px; }
"""

_IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def _plain(value: Any) -> Any:
    """JSON-ready data (paths and other objects as strings, numpy scalars as numbers)."""
    def default(obj: Any) -> Any:
        if hasattr(obj, "item") and not isinstance(obj, (list, tuple, dict)):
            try:
                return obj.item()
            except (TypeError, ValueError):
                pass
        if hasattr(obj, "tolist"):
            return obj.tolist()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def _format_number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1e4:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _cell(key: str, value: Any) -> tuple[str, bool]:
    """HTML for one value (escaped) and whether it is a number (right-aligned)."""
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    if isinstance(value, (int, float)):
        text = _format_number(float(value)) if isinstance(value, float) else f"{value:,}"
        if key.endswith("_bytes") and isinstance(value, (int, float)):
            from geoseg_batch.monitor import format_bytes

            text = f"{format_bytes(value)} ({text} B)"
        return html.escape(text), True
    if isinstance(value, Mapping):
        return _table(value, css="nested"), False
    if isinstance(value, (list, tuple)):
        if all(v is None or isinstance(v, (str, int, float, bool)) for v in value) and len(value) <= 12:
            return html.escape(", ".join(str(v) for v in value)) or "—", False
        return f"<pre>{html.escape(json.dumps(value, indent=2))}</pre>", False
    return html.escape(str(value)), False


def _table(rows: Mapping[str, Any], css: str = "") -> str:
    if not rows:
        return '<p class="meta">none</p>'
    lines = [f'<table class="{css}">' if css else "<table>"]
    for key, value in rows.items():
        cell, numeric = _cell(str(key), value)
        td = '<td class="num">' if numeric else "<td>"
        lines.append(f"<tr><th>{html.escape(str(key))}</th>{td}{cell}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"report image {path}: file not found")
    payload = path.read_bytes()
    for signature, mime in _IMAGE_TYPES:
        if payload.startswith(signature):
            return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
    raise InputError(f"report image {path}: received a file that is not PNG or JPEG, expected a PNG")


def _config_text(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(_plain(dict(config)), sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=100)


def write_run_report(path: Path, title: str, summary: Mapping[str, Any], config: Mapping[str, Any],
                     images: Sequence[tuple[str, Path]], metrics: Mapping[str, Any] | None = None) -> Path:
    """One self-contained HTML page for a run; returns ``path``.

    Sections: summary table, metrics table (when given), images (``(caption, png)`` pairs,
    embedded as base64 data URIs), and the resolved config as YAML. No external CSS,
    JavaScript or image references: the file can be mailed or archived alone. Nested
    mappings become nested tables; ``*_bytes`` values are shown in binary units too.
    Written atomically (temp name beside ``path``, then rename); parents are created.

    Raises MissingInputError for an image that does not exist, InputError for one that is
    not a PNG or JPEG (before anything is written).
    """
    from geoseg_batch import __version__
    from geoseg_batch.io.publish import atomic_path

    path = Path(path)
    figures = []
    for caption, image in images:  # read every image first: a bad one leaves nothing written
        figures.append(
            f'<figure><img src="{_data_uri(Path(image))}" alt="{html.escape(str(caption), quote=True)}">'
            f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
        )
    plain_summary = _plain(dict(summary))
    plain_metrics = _plain(dict(metrics)) if metrics else None
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_REPORT_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">generated {generated} by geoseg_batch {html.escape(__version__)}</p>',
        '<h2 id="summary">Summary</h2>',
        _table(plain_summary),
    ]
    if plain_metrics:
        parts += ['<h2 id="metrics">Metrics</h2>', _table(plain_metrics)]
    if figures:
        parts += ['<h2 id="quicklooks">Quicklooks</h2>', '<div class="images">', *figures, "</div>"]
    parts += [
        '<h2 id="config">Configuration</h2>',
        f'<pre class="config">{html.escape(_config_text(config))}</pre>',
        "</body>",
        "</html>",
    ]
    with atomic_path(path, ".html") as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
