"""How model tasks read scenes: blocks of tiles in lane order, files kept open per thread but never stale."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import rasterio

from geoseg_batch.geo.grid import TileGrid, Window
from geoseg_batch.infer.reading import SceneInput
from geoseg_batch.infer.segment import TASK_BLOCK, task_blocks

from tests.helpers import write_scene


def _block(batch) -> tuple[int, int]:
    return batch[0].index[0] // TASK_BLOCK[0], batch[0].index[1] // TASK_BLOCK[1]


def test_blocks_cover_every_tile_once_in_bands_of_lanes_column_by_column():
    grid = TileGrid(shape=(1000, 1500), tile=64, halo=16, multiple=16)  # 16 x 24 tiles
    for lanes in (1, 2, 3):
        blocks = task_blocks(grid.tiles(), grid.tile, lanes=lanes)
        indexes = [t.index for block in blocks for t in block]
        assert sorted(indexes) == sorted(t.index for t in grid.tiles())
        order = [_block(b) for b in blocks]
        assert order == sorted(order, key=lambda rc: (rc[0] // lanes, rc[1], rc[0] % lanes))
        assert all(len({_block([t]) for t in block}) == 1 for block in blocks)
    # two lanes: taking blocks in turn, each lane moves one block to the right at a time
    two = [_block(b) for b in task_blocks(grid.tiles(), grid.tile, lanes=2)]
    assert two[0::2][:6] == [(0, c) for c in range(6)] and two[1::2][:6] == [(1, c) for c in range(6)]


def test_a_scene_rewritten_in_place_is_read_afresh(tmp_path):
    path = write_scene(tmp_path / "scene.tif", (100, 120), dtype="float32", seed=1)
    with rasterio.open(path) as src:
        inputs = SceneInput(str(path), (1, 2, 3), None, (1.0,) * 3, (0.0,) * 3, "float32")
        first = src.read(window=rasterio.windows.Window(10, 20, 30, 40))
    window = Window(20, 60, 10, 40)
    out = np.empty((40, 30, 3), np.float32)
    inputs.read_into(window, out)
    np.testing.assert_array_equal(out, np.moveaxis(first, 0, -1))

    stat = os.stat(path)
    write_scene(path, (100, 120), dtype="float32", seed=2)  # same path and size, new pixels
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # even within a clock tick
    with rasterio.open(path) as src:
        second = src.read(window=rasterio.windows.Window(10, 20, 30, 40))
    assert not np.array_equal(first, second)
    inputs.read_into(window, out)
    np.testing.assert_array_equal(out, np.moveaxis(second, 0, -1))



def test_a_read_leaves_gdal_s_block_cache_as_it_found_it(tmp_path):
    path = write_scene(tmp_path / "scene.tif", (100, 120), dtype="float32", seed=1)
    show = "from rasterio.env import get_gdal_config; print(get_gdal_config('GDAL_CACHEMAX'))"
    read = ("import numpy as np; from geoseg_batch.geo.grid import Window; from geoseg_batch.infer.segment import "
            f"SceneInput; SceneInput({str(path)!r}, (1, 2, 3), None, (1.0,) * 3, (0.0,) * 3, 'float32')"
            ".read_into(Window(0, 40, 0, 30), np.empty((40, 30, 3), np.float32)); ")
    # Fresh processes: asking for the value first would hide the fault, which needs a read to come first.
    default, after = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
                      for code in (show, read + show))
    # The read's small cap, left in force, made a worker's later quicklooks and COGs decode blocks again and again.
    assert after == default
