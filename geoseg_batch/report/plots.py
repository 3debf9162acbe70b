"""Training and evaluation figures: training curves, confusion matrix, precision-recall curve.

Each ``*_figure`` function validates its inputs and returns a matplotlib Figure (nothing
written); each ``plot_*`` function draws that figure, writes it atomically as PNG with
:func:`~geoseg_batch.report.canvas.save_png` and returns the path written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from geoseg_batch.errors import InputError
from geoseg_batch.report.canvas import new_figure, save_png
from geoseg_batch.report.checks import as_array, require_ndim
from geoseg_batch.report.history import read_history

# History columns that are neither losses nor quality metrics: left off the plots.
_NON_METRIC_COLUMNS = frozenset({"epoch", "learning_rate", "lr", "seconds", "time", "duration"})


# --------------------------------------------------------------------------- training curves


def _base_name(column: str) -> str:
    """``val_f1`` -> ``f1``; ``f1`` -> ``f1``."""
    return column[4:] if column.startswith("val_") else column


def _val_first(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``columns`` reordered with the ``val_*`` ones first, so a legend reads val first."""
    return dict(sorted(columns.items(), key=lambda kv: not kv[0].startswith("val_")))


def _plot_series_panel(ax: Axes, epochs: np.ndarray, columns: dict[str, np.ndarray], empty_text: str) -> None:
    """Return nothing; draw train (dashed) and val (solid) series on ``ax``, one colour per base name."""
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


def _mark_best(ax: Axes, epochs: np.ndarray, values: np.ndarray, column: str, lowest: bool) -> None:
    """Return nothing; star the best epoch of ``column`` (lowest or highest finite value) on ``ax``."""
    finite = np.isfinite(values)
    if not finite.any():
        return
    candidates = np.where(finite, values, np.inf if lowest else -np.inf)
    i = int(np.argmin(candidates) if lowest else np.argmax(candidates))
    ax.plot(
        [epochs[i]], [values[i]], marker="*", markersize=13, color="black", linestyle="none",
        label=f"best {column} {values[i]:.3g} @ epoch {epochs[i]:g}", zorder=5,
    )


def _draw_metric_panel(ax: Axes, epochs: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
    """Return nothing; draw the metric series, star the best val_f1 (else val_iou), fit 0-1 metrics."""
    _plot_series_panel(ax, epochs, metrics, "no metric columns in history")
    for key in ("val_f1", "val_iou"):
        if key in metrics:
            _mark_best(ax, epochs, metrics[key], key, lowest=False)
            break
    if metrics:
        stacked = np.concatenate(list(metrics.values()))
        finite = stacked[np.isfinite(stacked)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            ax.set_ylim(0.0, 1.02)


def _finish_epoch_axes(ax: Axes, title: str) -> None:
    """Return nothing; title ``ax``, label its integer epoch axis, add a grid and (when any) a legend."""
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")


def training_curves_figure(history_csv: Path) -> Figure:
    """The two-panel figure (Loss, Metrics per epoch) of a training history CSV.

    See :func:`plot_training_curves` for the columns read. Raises MissingInputError if the
    CSV does not exist, DataError if it is malformed.
    """
    history_csv = Path(history_csv)
    history = read_history(history_csv)
    epochs = history["epoch"]
    losses = _val_first({c: v for c, v in history.items() if c.endswith("loss")})
    metrics = _val_first({
        c: v for c, v in history.items()
        if c not in _NON_METRIC_COLUMNS and not c.endswith("loss")
    })
    fig = new_figure(11.0, 4.2)
    ax_loss, ax_metric = fig.subplots(1, 2)
    _plot_series_panel(ax_loss, epochs, losses, "no loss columns in history")
    if "val_loss" in losses:
        _mark_best(ax_loss, epochs, losses["val_loss"], "val_loss", lowest=True)
    _draw_metric_panel(ax_metric, epochs, metrics)
    _finish_epoch_axes(ax_loss, "Loss")
    _finish_epoch_axes(ax_metric, "Metrics")
    fig.suptitle(f"Training history: {history_csv.name} ({len(epochs)} epochs)")
    return fig


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
    return save_png(training_curves_figure(history_csv), out_png)


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


def _confusion_counts(matrix: np.ndarray, names: list[str]) -> np.ndarray:
    """The validated (K, K) matrix as float counts; raises InputError for a wrong shape or values."""
    matrix = as_array(matrix, "confusion matrix")
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
    return counts


def _row_fractions(counts: np.ndarray) -> np.ndarray:
    """Each cell's share of its row (the true class); NaN in rows with no pixels."""
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(row_sums > 0, counts / np.where(row_sums > 0, row_sums, 1.0), np.nan)


def _annotate_cells(ax: Axes, counts: np.ndarray, fractions: np.ndarray, integral: bool) -> None:
    """Return nothing; write the count and the row percentage in every cell of ``ax``."""
    k = counts.shape[0]
    cell_font = max(6.0, 11.0 - 0.4 * k)
    for i in range(k):
        for j in range(k):
            fraction = fractions[i, j]
            colour = "white" if (not math.isnan(fraction) and fraction > 0.55) else "black"
            ax.text(
                j, i, f"{_format_count(counts[i, j], integral)}\n{_format_percent(fraction)}",
                ha="center", va="center", color=colour, fontsize=cell_font,
            )


def _label_classes(ax: Axes, names: list[str]) -> None:
    """Return nothing; name the classes on both axes of ``ax``, slanting long predicted labels."""
    k = len(names)
    ax.set_xticks(range(k), labels=names)
    ax.set_yticks(range(k), labels=names)
    if k * max(len(n) for n in names) > 36:  # labels would run into each other
        for label in ax.get_xticklabels():
            label.set_rotation(35)
            label.set_horizontalalignment("right")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """The confusion-matrix heatmap of :func:`plot_confusion_matrix`, as a Figure (nothing written)."""
    names = [str(n) for n in class_names]
    counts = _confusion_counts(matrix, names)
    integral = bool(np.all(counts == np.round(counts)))
    fractions = _row_fractions(counts)
    k = len(names)
    side = max(4.5, 0.95 * k + 2.5)
    fig = new_figure(side + 1.8, side)  # aspect="auto" below: layout stays robust to long labels
    ax = fig.subplots()
    image = ax.imshow(np.nan_to_num(fractions, nan=0.0), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    _annotate_cells(ax, counts, fractions, integral)
    _label_classes(ax, names)
    total = counts.sum()
    accuracy = np.trace(counts) / total if total > 0 else math.nan
    ax.set_title(
        f"Confusion matrix\nn = {_format_count(total, integral)}, accuracy {_format_percent(accuracy)}"
    )
    fig.colorbar(image, ax=ax, label="fraction of true class (row)")
    return fig


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], out_png: Path) -> Path:
    """Confusion-matrix heatmap; returns ``out_png``.

    ``matrix`` is (K, K) with K >= 2, rows the true class and columns the predicted one,
    in the order of ``class_names``. Counts and row-normalized percentages in each cell;
    colour is the row fraction (a class with no true pixels shows "—").
    """
    return save_png(confusion_matrix_figure(matrix, class_names), out_png)


# --------------------------------------------------------------------------- precision-recall


def _pr_arrays(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as validated 1-D float arrays; raises InputError otherwise."""
    precision = as_array(precision, "precision").astype(float)
    recall = as_array(recall, "recall").astype(float)
    thresholds = as_array(thresholds, "thresholds").astype(float)
    require_ndim(precision, 1, "precision", "(N,) with N >= 1")
    require_ndim(recall, 1, "recall", f"({precision.shape[0]},) like precision")
    require_ndim(thresholds, 1, "thresholds", f"({precision.shape[0]},) or ({precision.shape[0] - 1},)")
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
    return precision, recall, thresholds


def _nearest_threshold_index(thresholds: np.ndarray, best_threshold: float) -> int:
    """Index of the finite threshold nearest ``best_threshold``; raises InputError if there is none."""
    if not math.isfinite(best_threshold):
        raise InputError(f"best_threshold: received {best_threshold}, expected a finite number")
    distance = np.abs(thresholds - best_threshold)
    if not np.isfinite(distance).any():
        raise InputError("thresholds: received no finite values, expected at least one")
    return int(np.nanargmin(np.where(np.isfinite(distance), distance, np.nan)))


def _draw_iso_f1(ax: Axes) -> None:
    """Return nothing; draw faint iso-F1 lines (0.2 .. 0.8) on a precision (y) / recall (x) ``ax``."""
    grid = np.linspace(0.01, 1.0, 200)
    for f_score in (0.2, 0.4, 0.6, 0.8):
        with np.errstate(divide="ignore", invalid="ignore"):
            iso_precision = f_score * grid / (2 * grid - f_score)
        visible = (iso_precision > 0) & (iso_precision <= 1.05)
        ax.plot(grid[visible], iso_precision[visible], color="grey", alpha=0.3, linewidth=0.8)
        ax.annotate(f"F1={f_score:.1f}", xy=(0.93, f_score * 0.93 / (1.86 - f_score) + 0.015),
                    color="grey", alpha=0.7, fontsize=7)


def _mark_best_point(ax: Axes, r_best: float, p_best: float, best_threshold: float) -> None:
    """Return nothing; mark the best-F1 point on ``ax`` with a legend entry and a label facing inwards."""
    f1_best = 2 * p_best * r_best / (p_best + r_best) if (p_best + r_best) > 0 else 0.0
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


def pr_curve_figure(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray,
                    best_threshold: float) -> Figure:
    """The precision-recall figure of :func:`plot_pr_curve`, as a Figure (nothing written)."""
    precision, recall, thresholds = _pr_arrays(precision, recall, thresholds)
    best_threshold = float(best_threshold)
    best = _nearest_threshold_index(thresholds, best_threshold)
    fig = new_figure(6.2, 5.6)
    ax = fig.subplots()
    _draw_iso_f1(ax)
    # Plotted in the given (threshold) order: sorting by recall would zigzag within ties.
    ax.plot(recall, precision, color="#1f77b4", linewidth=2, label="precision-recall")
    _mark_best_point(ax, recall[best], precision[best], best_threshold)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall curve")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return fig


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
    return save_png(pr_curve_figure(precision, recall, thresholds, best_threshold), out_png)
