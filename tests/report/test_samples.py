"""Tests for geoseg_batch.report.samples: the image / truth / prediction (/ probability) grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg_batch import report
from geoseg_batch.data.bands import L4S_BANDS

from .conftest import assert_png, image_axes, legend_texts, sample_batch


def test_samples_with_probabilities(out_dir: Path) -> None:
    images, truths, predictions, probabilities = sample_batch(n=5)
    out = report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png", probabilities=probabilities)
    assert out == out_dir / "s.png"
    width, height = assert_png(out)
    assert height > width  # five rows of four columns, plus titles and legend


def test_samples_figure_content() -> None:
    images, truths, predictions, probabilities = sample_batch(n=5)
    fig = report.samples_figure(images, truths, predictions, L4S_BANDS, probabilities=probabilities)
    panels = image_axes(fig)
    assert len(panels) == 5 * 4  # five rows of image, truth, prediction, probability
    assert [ax.get_title() for ax in panels[:4]] == [
        "image\n(B4,B3,B2)", "truth\n", "prediction\nIoU 0.53", "probability\n"]  # 100 / 188 pixels
    assert [ax.get_title() for ax in panels[6::4]] == ["IoU 0.53"] * 4  # predictions of the later rows
    assert [ax.get_ylabel() for ax in panels[::4]] == [f"sample {r}" for r in range(5)]
    assert legend_texts(fig.legends[0]) == ["class 0", "class 1"]
    assert fig.get_suptitle() == "Samples: 5 samples"
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and colorbars[0].get_ylabel() == "probability"
    assert np.array_equal(panels[1].images[0].get_array(), truths[0])  # the truth panel shows the truth
    assert np.array_equal(panels[3].images[0].get_array(), probabilities[0])
    rgb = panels[0].images[0].get_array()
    assert rgb.shape == (32, 32, 3) and rgb.std() > 0  # the image panel shows the chip, not a flat colour


def test_samples_without_probabilities(out_dir: Path) -> None:
    images, truths, predictions, _ = sample_batch(n=2)
    width_3col, _ = assert_png(report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png"))
    (out_dir / "s.png").unlink()
    images, truths, predictions, probabilities = sample_batch(n=2)
    width_4col, _ = assert_png(
        report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png", probabilities=probabilities)
    )
    assert width_4col > width_3col
    fig = report.samples_figure(images, truths, predictions, L4S_BANDS)
    assert len(image_axes(fig)) == 2 * 3 and len(fig.axes) == 2 * 3  # no probability column, no colour bar


def test_samples_max_samples_limits_rows(out_dir: Path) -> None:
    images, truths, predictions, _ = sample_batch(n=6)
    _, tall = assert_png(report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png"))
    (out_dir / "s.png").unlink()
    _, short = assert_png(
        report.plot_samples(images, truths, predictions, L4S_BANDS, out_dir / "s.png", max_samples=2),
        min_size=(200, 150),
    )
    assert short < tall / 2
    fig = report.samples_figure(images, truths, predictions, L4S_BANDS, max_samples=2)
    assert len(image_axes(fig)) == 2 * 3
    assert fig.get_suptitle() == "Samples: first 2 of 6 samples"


def test_samples_multiclass_nan_and_few_bands(out_dir: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.random((2, 16, 16, 1))
    images[0, :3] = np.nan
    truths = rng.integers(0, 4, (2, 16, 16)).astype(float)  # integer-valued floats are fine
    predictions = rng.integers(0, 4, (2, 16, 16))
    assert_png(report.plot_samples(images, truths, predictions, ["DEM"], out_dir / "s.png"), min_size=(200, 150))
    fig = report.samples_figure(images, truths, predictions, ["DEM"])
    panels = image_axes(fig)
    assert panels[0].get_title() == "image\n(DEM,DEM,DEM)"  # one band: grey
    accuracy = np.mean(truths[0] == predictions[0])
    assert panels[2].get_title() == f"prediction\nacc {accuracy:.2f}"  # more than two classes: accuracy
    assert legend_texts(fig.legends[0]) == [f"class {i}" for i in range(4)]
    assert fig.get_suptitle() == "Samples: 2 samples"


def test_samples_binary_without_class_1_says_so() -> None:
    images, truths, predictions, _ = sample_batch(n=1, size=8)
    fig = report.samples_figure(images, np.zeros_like(truths), np.zeros_like(predictions), L4S_BANDS)
    assert image_axes(fig)[2].get_title() == "prediction\nIoU — (no class 1)"
    assert fig.get_suptitle() == "Samples: 1 sample"


def test_samples_validation(out_dir: Path) -> None:
    images, truths, predictions, probabilities = sample_batch(n=2, size=16)
    calls = [
        (dict(images=images[0]), r"images: received shape \(16, 16, 14\), expected \(N, H, W, C\)"),
        (dict(band_names=L4S_BANDS[:3]), r"images: received shape \(2, 16, 16, 14\) with 3 band names"),
        (dict(truths=truths[:1]), r"truths: received shape \(1, 16, 16\), expected \(2, 16, 16\)"),
        (dict(predictions=predictions[..., None]), r"predictions: received shape \(2, 16, 16, 1\), expected \(2, 16, 16\)"),
        (dict(probabilities=probabilities[:, :8]), r"probabilities: received shape \(2, 8, 16\), expected \(2, 16, 16\)"),
        (dict(truths=truths + 0.5), "expected integer class ids"),
        (dict(predictions=predictions - 1), "received class id -1"),
        (dict(max_samples=0), "max_samples: received 0"),
        (dict(max_samples=True), "max_samples: received True, expected an integer >= 1"),
        (dict(probabilities=np.full((2, 16, 16), "x")), "probabilities: received dtype <U1, expected float"),
        (dict(truths=np.full((2, 16, 16), "x")), "truths: received dtype <U1, expected integer class ids"),
    ]
    for override, pattern in calls:
        kwargs = dict(images=images, truths=truths, predictions=predictions, band_names=L4S_BANDS,
                      out_png=out_dir / "s.png")
        kwargs.update(override)
        with pytest.raises(ValueError, match=pattern):
            report.plot_samples(**kwargs)
    assert list(out_dir.iterdir()) == []
