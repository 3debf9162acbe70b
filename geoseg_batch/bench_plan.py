"""``bench plan``: what planning a very large run costs the client, and what Dask's scheduler costs per task.

Planning: ``geoseg-batch predict --dry-run`` in a fresh subprocess (its peak RSS, VmHWM, is its
own; start-up and the imports a run makes are not timed, as in the absurd-size tests) on
(1) one scene of ``side`` x ``side`` pixels, a GDAL VRT whose SimpleSources tile one real
file over and over (``--scene``, default a synthetic 14-band float32 scene the bench writes),
so GDAL parses a VRT of that many sources and the plan covers every tile; and (2) ``scenes``
separate scene files, each a small VRT of 3 x 3 copies of the same file under its own name
(so each is opened, checked and planned as its own scene; GDAL reads the one file's header).

Scheduler: ``tasks`` no-op tasks shaped like predict's model tasks (each carries its block of
8 :class:`~geoseg_batch.geo.grid.Tile` objects, the grid, a priority, a key per block, and
returns one small record per tile) computed on an embedded LocalCluster of ``workers``
processes, the model and all I/O stubbed out: the wall time per task is the scheduler's, the
client's and the workers' bookkeeping (the product path never runs these).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from geoseg_batch.io.publish import write_json

PLAN_RUNNER = """
import json, sys, time
import dask.array, odc.geo.geobox, psutil, rasterio, rioxarray, xarray, zarr  # start-up: what a run imports
from geoseg_batch.cli import main
started = time.perf_counter()
code = main(sys.argv[2:])
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
with open(sys.argv[1], "w") as report:
    json.dump({"code": code, "seconds": seconds, "peak_rss_bytes": peak}, report)
"""
COPIES = 3
"""Each of the many scenes is a VRT of COPIES x COPIES copies of the source file."""


def repeated_vrt(path: Path, source: Path, shape: tuple[int, int]) -> Path:
    """Write ``path``: a VRT of ``shape`` (rows, cols) pixels tiled by copies of ``source`` (one SimpleSource per
    copy and band, the last row and column clipped), georeferenced from ``source``'s origin and pixel size;
    returns ``path``."""
    import rasterio

    with rasterio.open(source) as src:
        rows, cols, bands = src.height, src.width, src.count
        dtype, (a, _, c, _, e, f) = src.dtypes[0], tuple(src.transform)[:6]
        crs, nodata, names = src.crs.to_wkt(), src.nodata, src.descriptions
    gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}[dtype]
    placed = [(r, k, min(rows, shape[0] - r), min(cols, shape[1] - k))
              for r in range(0, shape[0], rows) for k in range(0, shape[1], cols)]
    name = source.resolve()
    with open(path, "w") as vrt:
        vrt.write(f'<VRTDataset rasterXSize="{shape[1]}" rasterYSize="{shape[0]}">\n'
                  f"<SRS>{_escaped(crs)}</SRS><GeoTransform>{c}, {a}, 0, {f}, 0, {e}</GeoTransform>\n")
        for band in range(1, bands + 1):
            vrt.write(f'<VRTRasterBand dataType="{gdal_type}" band="{band}">'
                      + (f"<NoDataValue>{nodata}</NoDataValue>" if nodata is not None else "")
                      + (f"<Description>{names[band - 1]}</Description>" if names[band - 1] else "") + "\n")
            for r, k, height, width in placed:
                vrt.write(f'<SimpleSource><SourceFilename relativeToVRT="0">{name}</SourceFilename>'
                          f'<SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{width}" '
                          f'ySize="{height}"/><DstRect xOff="{k}" yOff="{r}" xSize="{width}" ySize="{height}"/>'
                          "</SimpleSource>\n")
            vrt.write("</VRTRasterBand>\n")
        vrt.write("</VRTDataset>\n")
    return path


def _escaped(text: str) -> str:
    """``text`` with XML's special characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def source_shape(source: Path) -> tuple[int, int, int]:
    """(rows, cols, bands) of the raster at ``source``."""
    import rasterio

    with rasterio.open(source) as src:
        return src.height, src.width, src.count


def scene_copies(root: Path, source: Path, count: int) -> list[Path]:
    """``count`` scene files in ``root``, each a VRT of :data:`COPIES` x :data:`COPIES` copies of ``source`` under
    its own name; their paths."""
    rows, cols, _ = source_shape(source)
    first = repeated_vrt(root / "scene_0000.vrt", source, (COPIES * rows, COPIES * cols))
    text = first.read_text()
    paths = [first]
    for number in range(1, count):
        paths.append(root / f"scene_{number:04d}.vrt")
        paths[-1].write_text(text)
    return paths


def dry_run_figures(arguments: list[str], report: Path) -> dict[str, Any]:
    """``geoseg-batch predict --dry-run ARGUMENTS`` in a fresh process: its exit code, seconds (``main`` only),
    peak RSS (VmHWM) and printed plan lines."""
    import os

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", PLAN_RUNNER, str(report), "--quiet", "predict", "--dry-run",
                           *arguments], capture_output=True, text=True, check=False, env=env)
    if done.returncode or not report.exists():
        raise RuntimeError(f"dry run failed: {done.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(report.read_text()), "plan_lines": done.stdout.strip().splitlines()}


def bench_plan(json_path: str | Path, side: int = 100_000, scenes: int = 1000, scene: str | Path | None = None,
               tile: int = 512, stitch: str = "exact", tasks: int = 0, workers: int = 2) -> dict[str, Any]:
    """The client's peak RSS and time of planning one ``side`` x ``side`` scene and ``scenes`` scenes (dry runs),
    and with ``tasks``, the scheduler's cost per predict-shaped no-op task; the figures, also written to
    ``json_path``. ``scene``: the file the VRTs repeat (default: a synthetic 14-band 1024 x 1024 scene)."""
    from geoseg_batch.bench import _bench_bundle

    with tempfile.TemporaryDirectory(prefix="geoseg-bench-plan-") as tmp:
        root = Path(tmp)
        source = Path(scene) if scene is not None else _synthetic_source(root / "source.tif")
        rows, cols, bands = source_shape(source)
        bundle = _bench_bundle(root / "model.keras", bands, 4, 16)
        common = ["--model", str(bundle), "--tile", str(tile), "--stitch", stitch, "--workers", str(workers)]
        figures: dict[str, Any] = {"source": str(source), "source_shape": [rows, cols], "bands": bands,
                                   "tile": tile, "stitch": stitch}
        started = time.perf_counter()
        huge = repeated_vrt(root / "huge.vrt", source, (side, side))
        figures["large"] = {"side": side, "vrt_sources": -(-side // rows) * -(-side // cols) * bands,
                            "vrt_bytes": huge.stat().st_size, "vrt_written_s": round(time.perf_counter() - started, 2),
                            **dry_run_figures([str(huge), *common, "--out", str(root / "out_large")],
                                              root / "large.json")}
        if scenes:
            many = root / "many"
            many.mkdir()
            listed = root / "scenes.txt"
            listed.write_text("\n".join(str(p) for p in scene_copies(many, source, scenes)) + "\n")
            arguments = ["--scene-list", str(listed), *common, "--out", str(root / "out_many")]
            figures["many"] = {"scenes": scenes, "scene_shape": [COPIES * rows, COPIES * cols],
                               **dry_run_figures(arguments, root / "many.json")}
        if tasks:
            figures["scheduler"] = scheduler_cost(tasks, workers, tile)
    write_json(json_path, figures)
    return figures


def _synthetic_source(path: Path) -> Path:
    """A synthetic 14-band float32 scene of 1024 x 1024 pixels at ``path`` (data/synthetic/geotiff.py)."""
    from geoseg_batch.data.synthetic import scene_layout, write_scene

    write_scene(path, path.with_name(path.stem + "_truth.tif"), scene_layout(7, 1024, 1024, 14), "EPSG:32633")
    return path


def stub_model_task(batch: list[Any], grid: Any, payload: bytes) -> list[Any]:
    """A predict model task with the model and all I/O stubbed out: the records of its tiles, as a real one returns
    them (``payload``: the bytes a real task carries besides its tiles: scene input, model ref, zarr target)."""
    from geoseg_batch.infer.segment import TileRecord

    return [TileRecord(t.index, True, t.window.shape[0] * t.window.shape[1], t.core.shape[0] * t.core.shape[1])
            for t in batch]


def stub_graph(tasks: int, tile: int, lanes: int) -> list[Any]:
    """``tasks`` delayed stub model tasks over a grid of blocks of tiles (4 x 2 of 512: predict's
    :func:`~geoseg_batch.infer.segment.task_block` for ``tile``), keyed and prioritized as
    :func:`~geoseg_batch.infer.segment.segment_graph` does."""
    import math

    import dask

    from geoseg_batch.geo.grid import TileGrid
    from geoseg_batch.infer.segment import task_block, task_blocks

    block_rows = math.ceil(math.sqrt(tasks))
    block_cols = math.ceil(tasks / block_rows)
    rows_per, cols_per = task_block(1, tile)
    grid = TileGrid((block_rows * rows_per * tile, block_cols * cols_per * tile), tile, 128, 16)
    blocks = task_blocks(grid.tiles(), tile, 1, lanes)[:tasks]
    payload = bytes(2048)  # a real task's scene input, model ref and target pickle to ~2 kB
    graph = []
    for number, batch in enumerate(blocks):
        (row0, col0), (row1, col1) = batch[0].index, batch[-1].index
        with dask.annotate(priority=-number):
            graph.append(dask.delayed(stub_model_task, pure=True)(
                batch, grid, payload, dask_key_name=f"predict-bench-{row0}-{col0}-{row1}-{col1}"))
    return graph


def scheduler_cost(tasks: int, workers: int, tile: int = 512) -> dict[str, Any]:
    """Wall time per task of ``tasks`` stub model tasks (:func:`stub_graph`) computed with predict's
    :func:`~geoseg_batch.infer.segment.run_graph` on an embedded LocalCluster of ``workers`` one-thread processes:
    graph building, and submission to the last record, per task (ms)."""
    import psutil
    from distributed import Client, LocalCluster

    from geoseg_batch.infer.segment import run_graph

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.submit(sum, [1]).result()  # workers up
        this, started = psutil.Process(), time.perf_counter()
        before = this.memory_info().rss
        graph = stub_graph(tasks, tile, workers)
        built = time.perf_counter()
        records = run_graph(graph, client)
        done = time.perf_counter()
        after = this.memory_info().rss  # the client's and the embedded scheduler's, the records held
    return {"tasks": tasks, "tiles": len(records), "workers": workers, "graph_s": round(built - started, 3),
            "run_s": round(done - built, 3), "graph_ms_per_task": round(1e3 * (built - started) / tasks, 3),
            "ms_per_task": round(1e3 * (done - built) / tasks, 3), "client_rss_growth_bytes": after - before}
