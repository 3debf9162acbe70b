"""Quicklook PNGs for training, evaluation and prediction runs; the HTML run report.

Each ``plot_*`` function draws one figure with matplotlib's object API on an explicit
Agg canvas (no pyplot, no global state), writes it atomically (a temporary file in the
same directory, then :func:`os.replace`, through :func:`geoseg_batch.io.publish.atomic_path`)
and returns the path written. Parent directories are created; an existing PNG at that path
is replaced. Each has a ``*_figure`` twin that returns the matplotlib Figure unwritten.

- :mod:`.plots`: :func:`plot_training_curves` (loss and metric curves per epoch from a
  history CSV), :func:`plot_confusion_matrix` (counts and row-normalized percentages per
  cell), :func:`plot_pr_curve` (precision-recall curve with the best-F1 threshold marked).
- :mod:`.samples`: :func:`plot_samples`, an image / truth / prediction (/ probability)
  grid, one row per sample.
- :mod:`.rgb`: :func:`rgb_composite` (and :func:`rgb_band_indices`), a displayable RGB
  from a multi-band chip.
- :mod:`.quicklooks`: :func:`quicklook_png`, a scene (RGB composite), probabilities (0-1
  colour map) or class mask of a raster file, read decimated (``out_shape``, so COG
  overviews serve it): never at full resolution. :func:`prediction_quicklooks` makes all
  three for a predict output.
- :mod:`.html`: :func:`write_run_report`, one self-contained HTML page per run (summary,
  metrics, quicklooks embedded as data URIs, resolved config), written atomically.
- :mod:`.canvas` (figures, class colours, the atomic PNG write), :mod:`.checks` (input
  checks) and :mod:`.history` (the training history CSV) serve the others.

Inputs are validated at the edge: wrong shapes raise :class:`~geoseg_batch.errors.InputError`
(a ``ValueError``) saying what was received and what was expected.
"""

from __future__ import annotations

from geoseg_batch.report.canvas import DPI
from geoseg_batch.report.html import write_run_report
from geoseg_batch.report.plots import (
    confusion_matrix_figure,
    plot_confusion_matrix,
    plot_pr_curve,
    plot_training_curves,
    pr_curve_figure,
    training_curves_figure,
)
from geoseg_batch.report.quicklooks import (
    QUICKLOOK_FULL_READ_PIXELS,
    QUICKLOOK_SOURCES,
    QuicklookKind,
    prediction_quicklooks,
    quicklook_figure,
    quicklook_png,
)
from geoseg_batch.report.rgb import rgb_band_indices, rgb_composite
from geoseg_batch.report.samples import plot_samples, samples_figure

__all__ = [
    "DPI",
    "QUICKLOOK_FULL_READ_PIXELS",
    "QUICKLOOK_SOURCES",
    "QuicklookKind",
    "confusion_matrix_figure",
    "plot_confusion_matrix",
    "plot_pr_curve",
    "plot_samples",
    "plot_training_curves",
    "pr_curve_figure",
    "prediction_quicklooks",
    "quicklook_figure",
    "quicklook_png",
    "rgb_band_indices",
    "rgb_composite",
    "samples_figure",
    "training_curves_figure",
    "write_run_report",
]
