"""Absurd sizes are refused before anything is allocated: within 2 s, the client under 1 GB, one line, nothing left.

Each case runs the CLI in a subprocess that reports, besides its stderr, the seconds ``main``
took and its own peak RSS (VmHWM: ``ru_maxrss`` would count the forking parent's pages).
Start-up is not counted: Python's, and the imports of the libraries a run uses (rasterio,
xarray, rioxarray, dask, zarr, odc-geo), which on a loaded 2-core machine alone take seconds;
the refusal itself is what must be quick.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rasterio.transform import from_origin

from geoseg_batch.cli import main

from tests.helpers import make_bundle, write_scene

ROOT = Path(__file__).resolve().parents[2]
RUNNER = """
import json, resource, sys, time
import dask.array, odc.geo.geobox, psutil, rasterio, rioxarray, xarray, zarr  # start-up: what a run imports
from geoseg_batch.cli import main
started = time.perf_counter()
code = main(sys.argv[2:])
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
usage = peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
with open(sys.argv[1], "w") as report:
    json.dump({"seconds": seconds, "peak_rss": usage[0], "children_rss": usage[1]}, report)
sys.exit(code)
"""
SECONDS = 2.0
PEAK_RSS = 2**30


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny bundle, three 64 x 64 scenes 10 km apart and their predict output (one run)."""
    root = tmp_path_factory.mktemp("absurd")
    bundle = make_bundle(root / "m.keras")
    scenes = [write_scene(root / f"scene_{n}.tif", (64, 64), seed=n,
                          transform=from_origin(500000 + 10000 * n, 5200000 - 5000 * n, 10, 10)) for n in range(3)]
    assert main(["predict", *map(str, scenes), "--model", str(bundle), "--out", str(root / "pred"), "--workers", "1",
                 "--tile", "64", "--no-cog"]) == 0
    return {"root": root, "bundle": bundle, "scenes": scenes, "pred": root / "pred"}


def _refused(tmp_path: Path, out: Path, *args: str) -> str:
    """Run the CLI on ``args`` (``--out out`` added); assert the refusal's bounds; its one line."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(report), *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines and lines[-1].startswith("geoseg-batch: error: "), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    measured = json.loads(report.read_text())
    assert measured["seconds"] < SECONDS, (measured, lines[-1])
    assert measured["peak_rss"] < PEAK_RSS, (measured, lines[-1])
    assert measured["children_rss"] < PEAK_RSS, measured  # no cluster was started (nor anything else big)
    assert not out.exists(), lines[-1]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], lines[-1]
    return lines[-1]


def _fix(line: str, flag: str) -> float:
    """The value the refusal proposes for ``flag``."""
    match = re.search(rf"use {flag} ([0-9.e+-]+)", line)
    assert match, line
    return float(match.group(1))


def test_mosaic_resolution_too_fine(tmp_path, inputs):
    line = _refused(tmp_path, tmp_path / "mosaic", "mosaic", str(inputs["pred"]), "--resolution", "0.01")
    assert "resolution (--resolution) 0.01" in line and "chunks" in line and "GiB" in line, line
    proposed = _fix(line, "--resolution")
    assert 0.01 < proposed < 10, line
    # The proposed resolution is accepted (it would build; the check alone is run here)
    from geoseg_batch.config import MosaicJob
    from geoseg_batch.geo.sources import grid_for, read_sources
    from geoseg_batch.runs.mosaic import check_sizes

    job = MosaicJob(predictions=[inputs["pred"]], out=tmp_path / "x", resolution=proposed)
    sources = read_sources(sorted(inputs["pred"].glob("*.zarr")))
    check_sizes(job, sources, grid_for(sources, resolution=proposed), None)


def test_mosaic_bounds_too_large(tmp_path, inputs):
    line = _refused(tmp_path, tmp_path / "mosaic", "mosaic", str(inputs["pred"]),
                    "--bounds", "-1000000000", "-1000000000", "1000000000", "1000000000")
    assert "bounds (--bounds) -1e+09 -1e+09 1e+09 1e+09" in line, line
    assert "use smaller --bounds (the scenes cover 500000 5189360 520640 5200000)" in line, line
    assert "or --resolution" in line, line


def test_mosaic_chunk_too_large(tmp_path, inputs):
    line = _refused(tmp_path, tmp_path / "mosaic", "mosaic", str(inputs["pred"]), "--chunk", "1000000")
    assert "chunk (--chunk) 1000000" in line and "a worker may use" in line, line
    assert 16 <= _fix(line, "--chunk") < 1000000, line


def test_predict_tile_too_large(tmp_path, inputs):
    line = _refused(tmp_path, tmp_path / "out", "predict", str(inputs["scenes"][0]), "--model", str(inputs["bundle"]),
                    "--workers", "1", "--tile", "1000000")
    assert "tile (--tile) 1000000" in line and "a model task" in line and "a worker may use" in line, line
    tile = _fix(line, "--tile")
    assert 8 <= tile < 1000000 and tile % 8 == 0, line


def test_predict_batch_too_large(tmp_path, inputs):
    line = _refused(tmp_path, tmp_path / "out", "predict", str(inputs["scenes"][0]), "--model", str(inputs["bundle"]),
                    "--workers", "1", "--batch-size", "100000")
    assert "batch_size (--batch-size) 100000" in line and "a worker may use" in line, line
    assert 1 <= _fix(line, "--batch-size") < 100000, line


def test_predict_scene_of_too_many_tiles(tmp_path, inputs):
    """A scene of 4 * 10^12 pixels (a VRT: nothing of it exists) at --tile 64: too many tiles for one run."""
    huge = tmp_path / "huge.vrt"
    huge.write_text(f"""<VRTDataset rasterXSize="2000000" rasterYSize="2000000">
  <SRS>EPSG:32633</SRS><GeoTransform>500000, 10, 0, 5200000, 0, -10</GeoTransform>
  {''.join(f'<VRTRasterBand dataType="Byte" band="{b}"><Description>b{b}</Description></VRTRasterBand>'
           for b in (1, 2, 3))}
</VRTDataset>""")
    line = _refused(tmp_path, tmp_path / "out", "predict", str(huge), "--model", str(inputs["bundle"]),
                    "--workers", "1", "--tile", "64")
    assert "tile (--tile) 64" in line and "tiles" in line and "the client may use" in line, line
    assert _fix(line, "--tile") > 64, line


@pytest.fixture(scope="module")
def small_workers():
    """The address of an existing cluster whose one worker has a 400 MiB memory limit."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="400MiB",
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_existing_cluster_workers_limit_is_checked_once_connected(tmp_path, capsys, inputs, small_workers):
    out = tmp_path / "out"
    code = main(["predict", str(inputs["scenes"][0]), "--model", str(inputs["bundle"]), "--out", str(out),
                 "--scheduler", small_workers, "--tile", "4096"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, line
    assert "tile (--tile) 4096" in line and "a worker may use 200 MiB (half its 400 MiB memory limit)" in line, line
    assert 8 <= _fix(line, "--tile") < 4096, line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    code = main(["mosaic", str(inputs["pred"]), "--out", str(tmp_path / "mosaic"), "--scheduler", small_workers,
                 "--chunk", "8192"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, line
    assert "chunk (--chunk) 8192" in line and "half its 400 MiB memory limit" in line, line
    assert not (tmp_path / "mosaic").exists()
