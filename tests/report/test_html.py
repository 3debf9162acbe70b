"""Tests for geoseg_batch.report.html: the self-contained HTML run report."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from geoseg_batch import report

from .conftest import pr_points


def _pngs(directory: Path) -> list[tuple[str, Path]]:
    first = report.plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["a", "b"], directory / "cm.png")
    precision, recall, thresholds, best = pr_points()
    second = report.plot_pr_curve(precision, recall, thresholds, best, directory / "pr.png")
    return [("confusion <matrix>", first), ("PR curve", second)]


SUMMARY = {"scenes": 2, "megapixels": 26.214, "tiles_total": 400, "tiles_computed": 396, "wall_s": 12.3456,
           "mpx_per_s": 2.1234, "peak_worker_rss_bytes": 3 * 1024**3, "phases": {"setup_s": 1.5, "tiles_s": 9.0},
           "stitch": "exact", "scene_f1": None}
CONFIG = {"kind": "predict", "name": "nightly", "scenes": [Path("/data/a.tif"), Path("/data/b.tif")], "tile": 512,
          "cluster": {"workers": 2, "scheduler": None}}


def test_run_report_is_one_self_contained_html_file(tmp_path: Path) -> None:
    import base64
    import html as html_lib

    images = _pngs(tmp_path / "png")
    out_dir = tmp_path / "report"
    path = report.write_run_report(out_dir / "report.html", "Run <nightly> & co", SUMMARY, CONFIG, images,
                                   metrics={"f1": 0.91234, "iou": 0.8, "per_class": {"landslide": 0.7}})
    assert path == out_dir / "report.html"
    assert [p.name for p in out_dir.iterdir()] == ["report.html"], "one file, no temp files"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for caption, png in images:  # each PNG embedded whole, with its caption
        assert f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" in text
        assert f"<figcaption>{html_lib.escape(caption)}</figcaption>" in text
    assert text.count("<img ") == 2
    # no external resources of any kind
    for external in ("<script", "<link", 'src="http', "src='http", "url(", "@import"):
        assert external not in text
    assert "<title>Run &lt;nightly&gt; &amp; co</title>" in text
    # summary, metrics and config
    for expected in ("<th>tiles_total</th>", ">400<", ">26.21<", ">12.35<", "3.0 GiB (3,221,225,472 B)",
                     "<th>setup_s</th>", ">exact<", "<th>f1</th>", ">0.9123<", "<th>landslide</th>"):
        assert expected in text, expected
    config_block = text.split('<pre class="config">')[1].split("</pre>")[0]
    assert yaml.safe_load(html_lib.unescape(config_block)) == {
        "kind": "predict", "name": "nightly", "scenes": ["/data/a.tif", "/data/b.tif"], "tile": 512,
        "cluster": {"workers": 2, "scheduler": None}}
    # the sections in order, under the title
    assert re.findall(r'<h2 id="(\w+)">', text) == ["summary", "metrics", "quicklooks", "config"]
    assert "<h1>Run &lt;nightly&gt; &amp; co</h1>" in text
    assert '<img src="data:image/png;base64,' in text and 'alt="confusion &lt;matrix&gt;"' in text


def test_run_report_cells(tmp_path: Path) -> None:
    summary = {"ok": True, "none": None, "count": 1234567, "big": 12345.678, "nan": float("nan"),
               "short": [1, "a", None], "long": list(range(20)), "empty": {}, "size_bytes": 2048}
    text = report.write_run_report(tmp_path / "r.html", "t", summary, {}, []).read_text()
    for expected in ("<th>ok</th><td>true</td>", "<th>none</th><td>—</td>", '<td class="num">1,234,567</td>',
                     '<td class="num">12,345.7</td>', '<td class="num">nan</td>', "<td>1, a, None</td>",
                     "<th>long</th><td><pre>[", '<p class="meta">none</p>',
                     '<td class="num">2.0 KiB (2,048 B)</td>'):
        assert expected in text, expected


def test_run_report_without_metrics_or_images_and_replacing_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("old")
    report.write_run_report(path, "t", {"wall_s": 1.0}, {"kind": "train"}, [])
    text = path.read_text()
    assert "Metrics" not in text and "<img" not in text and "Quicklooks" not in text
    assert "kind: train" in text
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_run_report_bad_image_writes_nothing(tmp_path: Path) -> None:
    from geoseg_batch.errors import InputError, MissingInputError

    path = tmp_path / "out" / "report.html"
    with pytest.raises(MissingInputError, match="missing.png"):
        report.write_run_report(path, "t", {}, {}, [("gone", tmp_path / "missing.png")])
    not_png = tmp_path / "notes.txt"
    not_png.write_text("hello")
    with pytest.raises(InputError, match="not PNG"):
        report.write_run_report(path, "t", {}, {}, [("text", not_png)])
    assert not path.exists() and not (tmp_path / "out").exists()


def test_run_report_embeds_quicklooks(rasters, tmp_path: Path) -> None:
    entry = {"scene": str(rasters["scene"]), "mask_cog": str(rasters["mask"]),
             "probability_cog": str(rasters["probabilities"])}
    images = report.prediction_quicklooks(entry, tmp_path / "quicklooks", max_side=96)
    path = report.write_run_report(tmp_path / "report.html", "predict", SUMMARY, CONFIG, images)
    assert path.read_text().count("data:image/png;base64,") == 3
