"""bench plan's inputs: VRTs that repeat a file, and the stub graph shaped like predict's (figures: in the bench)."""

from __future__ import annotations

import numpy as np
import rasterio

from geoseg_batch.bench_plan import repeated_vrt, scene_copies, stub_graph
from geoseg_batch.infer.segment import run_graph

from tests.helpers import write_scene


def test_repeated_vrt_tiles_the_file_over_and_over(tmp_path):
    source = write_scene(tmp_path / "s.tif", (40, 30), bands=2, nodata=0)
    first, second = scene_copies(tmp_path, source, 2)
    assert first.name != second.name and first.read_text() == second.read_text()
    with rasterio.open(source) as src, rasterio.open(first) as vrt:
        pixels = src.read()
        assert (vrt.height, vrt.width, vrt.count) == (120, 90, 2)
        assert vrt.crs == src.crs and vrt.transform == src.transform and vrt.nodata == 0
        assert vrt.descriptions == src.descriptions
        np.testing.assert_array_equal(vrt.read(), np.tile(pixels, (1, 3, 3)))
    with rasterio.open(repeated_vrt(tmp_path / "clipped.vrt", source, (100, 70))) as vrt:  # copies cut at the edges
        np.testing.assert_array_equal(vrt.read(), np.tile(pixels, (1, 3, 3))[:, :100, :70])


def test_stub_graph_is_one_task_per_block_with_a_record_per_tile():
    graph = stub_graph(10, 64, lanes=2)
    assert len(graph) == 10 and len({d.key for d in graph}) == 10
    assert all(d.key.startswith("predict-bench-") for d in graph)
    records = run_graph(graph, None)
    assert len(records) == 80 and len({r.index for r in records}) == 80
