"""Tests for geoseg_batch.report.plots: training curves, confusion matrix, precision-recall curve.

Each plot is checked twice: the figure (panels, titles, axis labels, legend entries, cell
texts) and the PNG written from it (readable, not blank, no temp files left).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg_batch import report
from geoseg_batch.report import plots

from .conftest import assert_png, axes_texts, legend_texts, pr_points, write_history

# --------------------------------------------------------------------------- training curves

FULL_HEADER = [
    "epoch", "loss", "val_loss", "precision", "recall", "f1", "iou",
    "val_precision", "val_recall", "val_f1", "val_iou", "learning_rate", "seconds",
]


def _full_history(tmp_path: Path) -> Path:
    rows = []
    for epoch in range(12):
        loss = 0.7 * 0.85**epoch
        metric = 1 - 0.9 * 0.8**epoch
        rows.append([epoch, loss, loss + 0.05, metric, metric, metric, metric / 2,
                     metric - 0.1, metric - 0.1, metric - 0.1, metric / 2 - 0.1, 0.001, 12.5])
    return write_history(tmp_path / "history.csv", FULL_HEADER, rows)


def test_training_curves_with_val_columns(tmp_path: Path, out_dir: Path) -> None:
    history = _full_history(tmp_path)
    out = report.plot_training_curves(history, out_dir / "curves.png")
    assert out == out_dir / "curves.png"
    width, height = assert_png(out)
    assert width > height  # two panels side by side


def test_training_curves_figure_content(tmp_path: Path) -> None:
    fig = report.training_curves_figure(_full_history(tmp_path))
    ax_loss, ax_metric = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Metrics"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    assert fig.get_suptitle() == "Training history: history.csv (12 epochs)"
    best_loss = 0.7 * 0.85**11 + 0.05
    assert legend_texts(ax_loss.get_legend()) == ["loss (val)", "loss (train)", f"best val_loss {best_loss:.3g} @ epoch 11"]
    metric_legend = legend_texts(ax_metric.get_legend())
    assert metric_legend[:4] == ["precision (val)", "recall (val)", "f1 (val)", "iou (val)"]
    assert metric_legend[4:8] == ["precision (train)", "recall (train)", "f1 (train)", "iou (train)"]
    assert len(metric_legend) == 9 and metric_legend[-1].startswith("best val_f1 ") and "@ epoch 11" in metric_legend[-1]
    assert not any("learning_rate" in t or "seconds" in t for t in metric_legend)  # not metrics
    assert [line.get_linestyle() for line in ax_loss.lines[:2]] == ["-", "--"]  # val solid, train dashed
    assert ax_loss.lines[0].get_xdata().tolist() == list(range(12))


def test_training_curves_without_val_columns(tmp_path: Path, out_dir: Path) -> None:
    rows = [[epoch, 1.0 / (epoch + 1), epoch / 10] for epoch in range(5)]
    history = write_history(tmp_path / "history.csv", ["epoch", "loss", "f1"], rows)
    assert_png(report.plot_training_curves(history, out_dir / "curves.png"))
    ax_loss, ax_metric = report.training_curves_figure(history).axes
    assert legend_texts(ax_loss.get_legend()) == ["loss (train)"]  # no val: nothing starred
    assert legend_texts(ax_metric.get_legend()) == ["f1 (train)"]
    assert ax_metric.get_ylim() == (0.0, 1.02)  # metrics within 0-1 use the whole 0-1 scale


def test_training_curves_loss_only_single_epoch_and_gaps(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss", "val_f1", "seconds"], [[0, 0.5, "", 3.0]])
    assert_png(report.plot_training_curves(history, out_dir / "curves.png"))
    fig = report.training_curves_figure(history)
    ax_loss, ax_metric = fig.axes
    assert legend_texts(ax_loss.get_legend()) == ["loss (train)"]
    assert legend_texts(ax_metric.get_legend()) == ["f1 (val)"]  # all NaN: drawn as a gap, not starred
    assert fig.get_suptitle() == "Training history: h.csv (1 epochs)"


def test_training_curves_without_metric_columns_says_so(tmp_path: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss", "learning_rate"], [[0, 1.0, 0.1], [1, 0.5, 0.1]])
    ax_loss, ax_metric = report.training_curves_figure(history).axes
    assert axes_texts(ax_metric) == ["no metric columns in history"]
    assert ax_metric.get_legend() is None and len(ax_metric.lines) == 0
    assert axes_texts(ax_loss) == []


def test_training_curves_resumed_run_with_duplicate_epochs(tmp_path: Path, out_dir: Path) -> None:
    rows = [[0, 0.9, 0.95], [1, 0.8, 0.85], [1, 0.7, 0.75], [2, 0.6, 0.7]]
    history = write_history(tmp_path / "h.csv", ["epoch", "loss", "val_loss"], rows)
    assert_png(report.plot_training_curves(history, out_dir / "curves.png"))
    ax_loss, _ = report.training_curves_figure(history).axes
    val, train = ax_loss.lines[:2]
    assert val.get_xdata().tolist() == [0.0, 1.0, 2.0]
    assert val.get_ydata().tolist() == [0.95, 0.75, 0.7]  # the later epoch-1 row won
    assert train.get_ydata().tolist() == [0.9, 0.7, 0.6]
    assert legend_texts(ax_loss.get_legend())[-1] == "best val_loss 0.7 @ epoch 2"


def test_training_curves_creates_parent_and_overwrites(tmp_path: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss"], [[0, 1.0], [1, 0.5]])
    out = tmp_path / "new" / "nested" / "curves.png"
    report.plot_training_curves(history, out)
    out.write_bytes(b"stale")
    assert_png(report.plot_training_curves(history, out))


def test_training_curves_missing_epoch_column(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["loss", "val_loss"], [[1.0, 1.1]])
    with pytest.raises(ValueError, match="epoch"):
        report.plot_training_curves(history, out_dir / "curves.png")
    assert list(out_dir.iterdir()) == []


def test_training_curves_bad_value_names_line_and_column(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss"], [[0, 1.0], [1, "oops"]])
    with pytest.raises(ValueError, match=r"line 3 column 'loss'.*'oops'"):
        report.plot_training_curves(history, out_dir / "curves.png")


def test_training_curves_wrong_field_count_and_empty_file(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss"], [[0, 1.0], [1, 0.5, 9]])
    with pytest.raises(ValueError, match=r"line 3: received 3 fields, expected 2"):
        report.plot_training_curves(history, out_dir / "curves.png")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="file is empty, expected a CSV header"):
        report.plot_training_curves(empty, out_dir / "curves.png")
    assert list(out_dir.iterdir()) == []


def test_training_curves_no_rows(tmp_path: Path, out_dir: Path) -> None:
    history = write_history(tmp_path / "h.csv", ["epoch", "loss"], [])
    with pytest.raises(ValueError, match="no epoch rows"):
        report.plot_training_curves(history, out_dir / "curves.png")


def test_training_curves_missing_file(tmp_path: Path, out_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        report.plot_training_curves(tmp_path / "nope.csv", out_dir / "curves.png")


# --------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_two_classes(out_dir: Path) -> None:
    matrix = np.array([[9_500_000, 12_000], [3_400, 41_000]])
    out = report.plot_confusion_matrix(matrix, ["background", "landslide"], out_dir / "cm.png")
    assert out == out_dir / "cm.png"
    assert_png(out)


def test_confusion_matrix_figure_content() -> None:
    matrix = np.array([[9_500_000, 12_000], [3_400, 41_000]])
    fig = report.confusion_matrix_figure(matrix, ["background", "landslide"])
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    ax, colorbar = fig.axes
    assert ax.get_title() == "Confusion matrix\nn = 9,556,400, accuracy 99.8%"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["background", "landslide"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["background", "landslide"]
    assert axes_texts(ax) == ["9,500,000\n99.9%", "12,000\n0.1%", "3,400\n7.7%", "41,000\n92.3%"]
    assert colorbar.get_ylabel() == "fraction of true class (row)"
    shown = ax.images[0].get_array()
    assert shown[0, 0] > 0.99 and shown[1, 0] == pytest.approx(3_400 / 44_400)  # colour is the row fraction


def test_confusion_matrix_many_classes_with_empty_row(out_dir: Path) -> None:
    matrix = np.arange(36, dtype=float).reshape(6, 6)
    matrix[2] = 0  # a class with no true pixels
    assert_png(report.plot_confusion_matrix(matrix, [f"class {i}" for i in range(6)], out_dir / "cm.png"))
    ax = report.confusion_matrix_figure(matrix, [f"class {i}" for i in range(6)]).axes[0]
    cells = axes_texts(ax)
    assert len(cells) == 36 and cells[12:18] == ["0\n—"] * 6  # the empty row has no percentages
    assert all(label.get_rotation() == 35 for label in ax.get_xticklabels())  # long labels slanted


def test_confusion_matrix_fractional_counts_and_rounding_edges() -> None:
    matrix = np.array([[0.5, 1999.5], [1.0, 0.0]])
    cells = axes_texts(report.confusion_matrix_figure(matrix, ["a", "b"]).axes[0])
    assert cells == ["0.5\n<0.1%", "2e+03\n>99.9%", "1\n100.0%", "0\n0.0%"]


@pytest.mark.parametrize(
    ("matrix", "names", "pattern"),
    [
        (np.zeros((2, 3)), ["a", "b"], r"received shape \(2, 3\), expected \(K, K\)"),
        (np.zeros((1, 1)), ["a"], r"received shape \(1, 1\), expected \(K, K\) with K >= 2"),
        (np.zeros(4), ["a", "b"], r"received shape \(4,\)"),
        (np.zeros((3, 3)), ["a", "b"], r"received shape \(3, 3\) and 2 class names, expected \(2, 2\)"),
        (np.array([[1, -1], [0, 2]]), ["a", "b"], "negative"),
    ],
)
def test_confusion_matrix_validation(matrix, names, pattern, out_dir: Path) -> None:
    with pytest.raises(ValueError, match=pattern):
        report.plot_confusion_matrix(matrix, names, out_dir / "cm.png")
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- precision-recall


def test_pr_curve_sklearn_style_thresholds(out_dir: Path) -> None:
    precision, recall, thresholds, best = pr_points()
    assert len(thresholds) == len(precision) - 1
    out = report.plot_pr_curve(precision, recall, thresholds, best, out_dir / "pr.png")
    assert out == out_dir / "pr.png"
    assert_png(out)


def test_pr_curve_figure_content() -> None:
    precision, recall, thresholds, best = pr_points()
    fig = report.pr_curve_figure(precision, recall, thresholds, best)
    (ax,) = fig.axes
    assert ax.get_title() == "Precision-recall curve"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("recall", "precision")
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.02)
    i = int(np.argmin(np.abs(thresholds - best)))
    f1 = 2 * precision[i] * recall[i] / (precision[i] + recall[i])
    assert legend_texts(ax.get_legend()) == ["precision-recall", f"best F1 {f1:.3f} at threshold {best:.3g}"]
    texts = axes_texts(ax)
    assert texts[:4] == ["F1=0.2", "F1=0.4", "F1=0.6", "F1=0.8"]  # iso-F1 lines give scale
    assert texts[4] == f"threshold {best:.3g}\nF1 {f1:.3f}"
    curve = next(line for line in ax.lines if line.get_label() == "precision-recall")
    assert np.array_equal(curve.get_xdata(), recall) and np.array_equal(curve.get_ydata(), precision)
    marker = next(line for line in ax.lines if line.get_label().startswith("best F1"))
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (recall[i], precision[i])


def test_pr_curve_one_threshold_per_point(out_dir: Path) -> None:
    precision, recall, thresholds, best = pr_points()
    assert_png(report.plot_pr_curve(precision[:-1], recall[:-1], thresholds, best, out_dir / "pr.png"))


def test_pr_curve_single_point(out_dir: Path) -> None:
    assert_png(report.plot_pr_curve(np.array([0.0]), np.array([0.0]), np.array([0.5]), 0.5, out_dir / "pr.png"))
    ax = report.pr_curve_figure(np.array([0.0]), np.array([0.0]), np.array([0.5]), 0.5).axes[0]
    assert legend_texts(ax.get_legend())[-1] == "best F1 0.000 at threshold 0.5"


@pytest.mark.parametrize(
    ("precision", "recall", "thresholds", "best", "pattern"),
    [
        (np.zeros((2, 5)), np.zeros(5), np.zeros(4), 0.5, r"precision: received shape \(2, 5\)"),
        (np.zeros(5), np.zeros(4), np.zeros(4), 0.5, r"recall: received shape \(4,\), expected \(5,\)"),
        (np.zeros(5), np.zeros(5), np.zeros(2), 0.5, r"thresholds: received shape \(2,\), expected \(5,\) or \(4,\)"),
        (np.zeros(0), np.zeros(0), np.zeros(0), 0.5, r"precision: received shape \(0,\)"),
        (np.zeros(5), np.zeros(5), np.zeros(4), float("nan"), "best_threshold"),
        (np.zeros(5), np.zeros(5), np.full(4, np.nan), 0.5, "thresholds: received no finite values"),
    ],
)
def test_pr_curve_validation(precision, recall, thresholds, best, pattern, out_dir: Path) -> None:
    with pytest.raises(ValueError, match=pattern):
        report.plot_pr_curve(precision, recall, thresholds, best, out_dir / "pr.png")
    assert list(out_dir.iterdir()) == []


def test_plot_functions_are_the_figure_builders_saved() -> None:
    assert report.plot_pr_curve is plots.plot_pr_curve
    assert report.training_curves_figure is plots.training_curves_figure
