"""``bench predict --roofline`` on a tiny scene: it runs and its figures are consistent with each other
(correctness only: speed figures belong to the bench itself, never to a test)."""

from __future__ import annotations

import json

import pytest

from geoseg_batch.bench_roofline import RUN_KEYS, bench_roofline, decode_ceiling, table_lines
from geoseg_batch.errors import ConfigError

from tests.helpers import bench_usage_error, write_scene


def test_the_roofline_mode_gives_consistent_figures(tmp_path):
    path = tmp_path / "roofline.json"
    figures = bench_roofline(path, megapixels=0.25, bands=3, depth=1, base_filters=2, workers=1,  # predict's auto tile
                             stitches=("exact",), repeats=1, raw_tiles=2)
    assert json.loads(path.read_text()) == figures
    assert figures["megapixels"] == 0.262 and figures["decode_threads"] == 1  # a 512 x 512 scene
    assert figures["decode_mpx_per_s"] > 0 and len(figures["rounds"]) == 1
    assert set(figures["runs"]) == {"near_free_exact", "float32_exact"}
    for name, run in figures["runs"].items():
        assert set(run) == {"tile", *RUN_KEYS}, name
        assert run["tile"] == 512, name  # the auto tile of these small models (its least)
        assert 0 < run["efficiency"] <= 1.5 and run["model_px_per_output_px"] >= 1, (name, run)
        assert run["tiles_s"] < run["wall_s"] and run["tiles_efficiency"] >= run["efficiency"]
        expected = (figures["megapixels"] * run["model_px_per_output_px"] / run["raw_mpx_per_s"]
                    + figures["megapixels"] / figures["decode_mpx_per_s"])
        assert run["roofline_s"] == pytest.approx(expected, rel=1e-2)
        assert run["tiles_over_decode"] == pytest.approx(run["tiles_mpx_per_s"] / figures["decode_mpx_per_s"])
        stages = [run[f"{stage}_thread_s"] for stage in ("read", "normalize", "model", "write")]
        assert all(seconds > 0 for seconds in stages) and sum(stages) <= run["tiles_s"] + 0.01  # one worker thread
    lines = table_lines(figures["table"])
    assert lines[:2] == ["| figure | value |", "|---|---|"] and len(lines) == 2 + len(figures["table"]) == 9
    assert "Mpx/s" in lines[2] and all(line.count("|") == 3 for line in lines)
    assert "read / normalize / model / write, near_free_exact" in lines[-2] and "thread-s" in lines[-1]


def test_the_decode_ceiling_reads_every_pixel_once(tmp_path):
    scene = write_scene(tmp_path / "tiny.tif", (160, 192), bands=3)
    figures = decode_ceiling(scene, threads=2)
    assert figures["megapixels"] == round(160 * 192 / 1e6, 3) and figures["mpx_per_s"] > 0


@pytest.mark.parametrize("args, needle", [
    (["--roofline", "--backend", "jax"], "--roofline measures one synthetic scene"),
    (["--roofline", "--scaling"], "drop --scene-url, --scaling"),
])
def test_bad_roofline_arguments_are_one_line(tmp_path, capsys, args, needle):
    line = bench_usage_error(tmp_path, capsys, args)  # argparse's usage errors
    assert needle in line, line


@pytest.mark.parametrize("options, needle", [
    ({"repeats": 0}, "--repeats: got 0"), ({"stitches": ("seamless",)}, "expected some of"),
    ({"precisions": ("float16",)}, "expected float32 and/or bfloat16"),
])
def test_bad_roofline_options_are_refused_before_any_work(tmp_path, options, needle):
    with pytest.raises(ConfigError, match=needle):
        bench_roofline(tmp_path / "b.json", **options)
    assert not (tmp_path / "b.json").exists()
