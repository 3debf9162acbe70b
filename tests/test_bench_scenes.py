"""``bench predict --scenes N`` on tiny scenes: it runs and its figures are consistent with each other
(correctness only: speed figures belong to the bench itself, never to a test)."""

from __future__ import annotations

import json

import pytest

from geoseg_batch.bench_roofline import table_lines
from geoseg_batch.bench_scenes import RUN_KEYS, bench_scenes, scenes_table
from geoseg_batch.errors import ConfigError

from tests.helpers import bench_usage_error


def test_the_scenes_mode_compares_many_scenes_with_one_of_the_same_pixels(tmp_path):
    path = tmp_path / "scenes.json"
    figures = bench_scenes(path, megapixels=512**2 / 1e6, scenes=4, tile=128, stitch="exact", bands=3, depth=1,
                           base_filters=2, workers=1, repeats=1, scaling=True)
    assert json.loads(path.read_text()) == figures
    assert figures["megapixels_one"] == figures["megapixels_many"] == 0.262  # 512^2 vs 4 x 256^2
    assert [list(r) for r in figures["rounds"]] == [["one", "many", "quarter"]]
    assert figures["rounds"][0]["many"]["scenes"] == 4 and figures["rounds"][0]["one"]["scenes"] == 1
    for side in ("one", "many", "quarter"):
        assert set(figures[side]) == set(RUN_KEYS), side
        run = figures[side]
        assert run["whole_mpx_per_s"] > run["end_to_end_mpx_per_s"] > 0 and run["tiles_s"] < run["wall_s"]
        assert run["peak_tree_rss_bytes"] >= run["peak_worker_rss_bytes"] > 0
    ratio = figures["many"]["whole_mpx_per_s"] / figures["one"]["whole_mpx_per_s"]
    assert figures["many_over_one_whole"] == pytest.approx(ratio)
    scaling = figures["scaling"]
    assert scaling["megapixels_large"] == figures["megapixels_one"] and scaling["megapixels_small"] == 0.066
    assert scaling["growth"] == pytest.approx(figures["one"]["peak_tree_rss_bytes"]
                                              / figures["quarter"]["peak_tree_rss_bytes"] - 1)
    lines = table_lines(scenes_table(figures))
    assert len(lines) == 2 + 5 and "4 scenes of 0.07 Mpx in one run" in lines[3], lines


@pytest.mark.parametrize("args, needle", [
    (["--scenes", "4", "--backend", "jax"], "drop --scene-url and --backend"),
    (["--scenes", "4", "--scene-url", "loopback"], "drop --scene-url and --backend"),
])
def test_bad_scenes_arguments_are_one_line(tmp_path, capsys, args, needle):
    line = bench_usage_error(tmp_path, capsys, args)  # argparse's usage errors
    assert needle in line, line


@pytest.mark.parametrize("options, needle", [({"scenes": 1}, "--scenes: got 1"), ({"repeats": 0}, "--repeats: got 0")])
def test_bad_scenes_options_are_refused_before_any_work(tmp_path, options, needle):
    with pytest.raises(ConfigError, match=needle):
        bench_scenes(tmp_path / "b.json", **options)
    assert not (tmp_path / "b.json").exists()
