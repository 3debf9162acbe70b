"""geoseg_batch.sizing: what a run will need, and the one-line refusals with a value that fits."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from geoseg_batch import sizing
from geoseg_batch.config import ClusterSpec, MosaicJob, PredictJob
from geoseg_batch.errors import ConfigError
from geoseg_batch.runs.tile_size import auto_tile
from geoseg_batch.sizing import (
    GiB, Budget, SourceSize, check_mosaic, check_predict, coarsest_fit, embedded_worker_limit, largest,
    model_task_bytes, mosaic_task_bytes, smallest, store_chunk_bytes, tiles_of, worker_limit_of,
)

METADATA = SimpleNamespace(size_multiple=16, bands=14, binary=True, classes=("background", "landslide"),
                           architecture={"depth": 4, "base_filters": 16})
BUDGET = Budget(worker_limit=8 * GiB, client_bytes=4 * GiB)
BLOCK = (4, 2)


def _predict(**options) -> PredictJob:
    """A predict job of tiles of 512 (the default before the auto tile: these tests' sizes are of that tile)."""
    return PredictJob(scenes=["s.tif"], model="m.keras", out="out", **{"tile": 512, **options})


def _fix(error: pytest.ExceptionInfo, flag: str) -> float:
    match = re.search(rf"use {flag} ([0-9.e+-]+)", str(error.value))
    assert match, error.value
    return float(match.group(1))


def test_model_task_bytes_grow_with_batch_and_tile():
    one = model_task_bytes(512, 96, 1, 14, 16, 1, BLOCK)
    assert model_task_bytes(512, 96, 2, 14, 16, 1, BLOCK) > one
    assert model_task_bytes(1024, 96, 1, 14, 16, 1, BLOCK) > 3 * one
    # the forward pass alone: a window of (512 + 2 * 96)^2 pixels x (bands x 4 + 32 bytes per base filter)
    assert one > (512 + 192) ** 2 * (14 * 4 + 16 * sizing.ACTIVATION_BYTES)
    assert store_chunk_bytes(512, 1, True, True) > store_chunk_bytes(512, 1, False, False)


def test_default_predict_fits_an_ordinary_worker():
    check_predict(_predict(), METADATA, [(10_000, 10_000)], 96, Budget(4 * GiB, 2 * GiB))
    auto = PredictJob(scenes=["s.tif"], model="m.keras", out="out")  # tile: auto
    tile = auto_tile(METADATA, auto.stitch, 96, 1, Budget(4 * GiB, 2 * GiB))
    assert tile > 512
    check_predict(auto, METADATA, [(10_000, 10_000)], 96, Budget(4 * GiB, 2 * GiB), tile)


def test_tile_too_large_names_the_largest_tile_that_fits():
    job = _predict(tile=1_000_000)
    with pytest.raises(ConfigError, match=r"^tile \(--tile\) 1000000: a model task .* would need [0-9.]+ GiB, "
                                          r"a worker may use 4\.0 GiB \(half its 8\.0 GiB memory limit\)") as error:
        check_predict(job, METADATA, [(500, 500)], 96, BUDGET)
    tile = int(_fix(error, "--tile"))
    assert tile % 16 == 0
    check_predict(_predict(tile=tile), METADATA, [(500, 500)], 96, BUDGET)  # the proposal fits
    with pytest.raises(ConfigError):
        check_predict(_predict(tile=tile + 16), METADATA, [(500, 500)], 96, BUDGET)  # and is the largest


def test_batch_too_large_names_the_largest_batch_that_fits():
    with pytest.raises(ConfigError, match=r"^batch_size \(--batch-size\) 100000: ") as error:
        check_predict(_predict(batch_size=100_000), METADATA, [(500, 500)], 96, BUDGET)
    batch = int(_fix(error, "--batch-size"))
    check_predict(_predict(batch_size=batch), METADATA, [(500, 500)], 96, BUDGET)
    with pytest.raises(ConfigError):
        check_predict(_predict(batch_size=batch + 1), METADATA, [(500, 500)], 96, BUDGET)


def test_no_tile_fits_a_tiny_worker():
    with pytest.raises(ConfigError, match="no tile fits: give the workers more memory"):
        check_predict(_predict(), METADATA, [(500, 500)], 96, Budget(2**20, 4 * GiB))


def test_unknown_worker_limit_checks_the_client_only():
    check_predict(_predict(tile=1_000_000), METADATA, [(500, 500)], 96, Budget(None, 4 * GiB))
    assert Budget(None, 1).task_bytes is None


def test_too_many_tiles_names_the_smallest_tile_that_fits():
    shapes = [(2_000_000, 2_000_000)]
    with pytest.raises(ConfigError, match=r"^tile \(--tile\) 64: a run of 976562500 tiles .* a run holds at most "
                                          r"500000 tiles or chunks") as error:
        check_predict(_predict(tile=64), METADATA, shapes, 96, Budget(None, 64 * GiB))
    tile = int(_fix(error, "--tile"))
    check_predict(_predict(tile=tile), METADATA, shapes, 96, Budget(None, 64 * GiB))
    with pytest.raises(ConfigError):
        check_predict(_predict(tile=tile - 16), METADATA, shapes, 96, Budget(None, 64 * GiB))


def test_too_many_tiles_and_no_tile_fits_a_worker_says_split():
    with pytest.raises(ConfigError, match="split the scenes into several runs"):
        check_predict(_predict(tile=64), METADATA, [(2_000_000, 2_000_000)], 96, Budget(2 * GiB, 64 * GiB))


SOURCES = [SourceSize(bands=1, itemsize=1, shape=(5000, 5000), span=(1.0, 1.0))] * 3


def test_mosaic_chunk_too_large_names_a_chunk_that_fits():
    job = MosaicJob(predictions=["p"], out="o", chunk=1_000_000)
    with pytest.raises(ConfigError, match=r"^chunk \(--chunk\) 1000000: a chunk task over 3 scenes") as error:
        check_mosaic(job, (10_000, 10_000), (10.0, 10.0), SOURCES, 2, BUDGET)
    chunk = int(_fix(error, "--chunk"))
    assert mosaic_task_bytes(chunk, SOURCES, 2) <= BUDGET.task_bytes < mosaic_task_bytes(chunk + 1, SOURCES, 2)


def test_mosaic_resolution_too_fine_names_the_finest_that_fits():
    job = MosaicJob(predictions=["p"], out="o", resolution=0.01)
    shape = (5_000_000, 5_000_000)  # 50 km at 0.01
    with pytest.raises(ConfigError, match=r"^resolution \(--resolution\) 0\.01: a grid of 5000000 x 5000000 pixels "
                                          r"in 95374756 chunks of 512") as error:
        check_mosaic(job, shape, (0.01, 0.01), SOURCES, 2, BUDGET)
    fit = _fix(error, "--resolution")
    assert fit == coarsest_fit(512, shape, (0.01, 0.01), BUDGET)
    side = round(50_000 / fit)
    check_mosaic(job.model_copy(update={"resolution": fit}), (side, side), (fit, fit), SOURCES, 2, BUDGET)
    finer = fit * 0.9
    assert tiles_of((round(50_000 / finer),) * 2, 512) > BUDGET.max_tasks or \
        sizing.graph_bytes(tiles_of((round(50_000 / finer),) * 2, 512), [(round(50_000 / finer),) * 2]) > \
        BUDGET.client_bytes


def test_mosaic_bounds_too_large_names_the_scenes_bounds():
    job = MosaicJob(predictions=["p"], out="o", bounds=(-1e9, -1e9, 1e9, 1e9))
    with pytest.raises(ConfigError, match=r"^bounds \(--bounds\) -1e\+09 -1e\+09 1e\+09 1e\+09: .* use smaller "
                                          r"--bounds \(the scenes cover 0 0 50000 50000\), or --resolution "):
        check_mosaic(job, (200_000_000, 200_000_000), (10.0, 10.0), SOURCES, 2, BUDGET, (0, 0, 50000, 50000))


def test_mosaic_of_ordinary_scenes_fits():
    check_mosaic(MosaicJob(predictions=["p"], out="o"), (20_000, 30_000), (10.0, 10.0), SOURCES, 2, BUDGET)


def test_embedded_worker_limit_follows_distributed(monkeypatch):
    monkeypatch.setattr(sizing, "machine_memory", lambda: (16 * GiB, 12 * GiB))
    assert embedded_worker_limit(ClusterSpec(), cores=4) == 4 * GiB  # "auto": memory x threads / cores
    assert embedded_worker_limit(ClusterSpec(threads_per_worker=8), cores=4) == 16 * GiB
    assert embedded_worker_limit(ClusterSpec(memory_limit="2GiB"), cores=4) == 2 * GiB
    assert embedded_worker_limit(ClusterSpec(memory_limit="0.25"), cores=4) == 4 * GiB
    assert embedded_worker_limit(ClusterSpec(memory_limit="64GiB"), cores=4) == 16 * GiB  # never above the machine
    assert embedded_worker_limit(ClusterSpec(scheduler="tcp://h:8786"), cores=4) is None
    with pytest.raises(ConfigError, match="cluster.memory_limit 'lots' is not a size"):
        embedded_worker_limit(ClusterSpec(memory_limit="lots"), cores=4)


def test_worker_limit_of_scheduler_info():
    info = {"workers": {"a": {"memory_limit": 8 * GiB}, "b": {"memory_limit": 4 * GiB}, "c": {"memory_limit": 0}}}
    assert worker_limit_of(info) == 4 * GiB
    assert worker_limit_of({"workers": {"a": {}}}) is None


def test_searches():
    assert largest(lambda n: n <= 37, 1, 100) == 37
    assert largest(lambda n: False, 1, 100) is None
    assert smallest(lambda n: n >= 37, 1, 100) == 37
    assert smallest(lambda n: False, 1, 100) is None


def test_too_many_tiles_after_resampling_says_so():
    job = PredictJob(scenes=["s.tif"], model="m.keras", out="out", tile=64, resample=True)
    with pytest.raises(ConfigError, match=r"use --tile \d+ or more, or drop --resample"):
        check_predict(job, METADATA, [(2_000_000, 2_000_000)], 96, Budget(None, 64 * GiB))
