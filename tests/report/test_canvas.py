"""Tests for geoseg_batch.report.canvas: Agg figures, class colours and the atomic PNG write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from geoseg_batch import report
from geoseg_batch.report import canvas

from .conftest import assert_png, png_pixels


def test_failed_render_leaves_previous_png_and_no_temp_file(out_dir: Path, monkeypatch) -> None:
    out = out_dir / "cm.png"
    matrix = np.array([[5, 1], [2, 7]])
    report.plot_confusion_matrix(matrix, ["a", "b"], out)
    before = out.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        fname.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        report.plot_confusion_matrix(matrix, ["a", "b"], out)
    assert out.read_bytes() == before
    assert [p.name for p in out_dir.iterdir()] == ["cm.png"]


def test_save_png_goes_through_the_one_atomic_writer(out_dir: Path, monkeypatch) -> None:
    from geoseg_batch.io import publish

    used: list[Path] = []
    original = publish.atomic_path

    def spy(path, suffix=""):
        used.append(Path(path))
        return original(path, suffix)

    monkeypatch.setattr(canvas, "atomic_path", spy)
    fig = canvas.new_figure(3.0, 2.0)
    fig.subplots().plot([0, 1], [0, 1])
    out = canvas.save_png(fig, out_dir / "nested" / "line.png")
    assert used == [out] and out == out_dir / "nested" / "line.png"
    assert_png(out, min_size=(300, 200))
    assert png_pixels(out).shape == (2 * canvas.DPI, 3 * canvas.DPI, 3)  # the figure's inches at DPI


def test_new_figure_is_on_its_own_agg_canvas() -> None:
    fig = canvas.new_figure(4.0, 3.0)
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert tuple(fig.get_size_inches()) == (4.0, 3.0) and fig.dpi == canvas.DPI


def test_blank_figure_is_caught_by_the_png_check(out_dir: Path) -> None:
    out = canvas.save_png(canvas.new_figure(3.0, 2.0), out_dir / "blank.png")
    with pytest.raises(AssertionError, match="one flat colour"):
        assert_png(out)


def test_class_colours_are_discrete_and_distinct() -> None:
    cmap, norm = canvas.class_colours(3)
    assert cmap.N == 3 and [norm(i) for i in range(3)] == [0, 1, 2]
    assert len({cmap(i) for i in range(3)}) == 3
    many, _ = canvas.class_colours(12)  # beyond the fixed palette: hues from turbo
    assert many.N == 12 and len({many(i) for i in range(12)}) == 12
    labels = [patch.get_label() for patch in canvas.class_legend_handles(cmap, 3)]
    assert labels == ["class 0", "class 1", "class 2"]
