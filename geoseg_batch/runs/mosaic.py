"""run_mosaic: the scenes' predictions reprojected and merged onto one grid, chunk by chunk; zarr + COGs."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from geoseg_batch.config import MosaicJob, resolved
from geoseg_batch.io.oserrors import translated_os_errors
from geoseg_batch.io.publication import Publication, output_lease
from geoseg_batch.io.publish import config_digest
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.state import RunState
from geoseg_batch.io.storage import storage_for
from geoseg_batch.io.urls import Location, gdal_path, location, output_location
from geoseg_batch.io.urls import name as file_name
from geoseg_batch.runs.predictions import prediction_stores
from geoseg_batch.runs.result import JobResult, finished_result
from geoseg_batch.runs.settings import job_settings
from geoseg_batch.stac.outputs import publish_mosaic_stac

if TYPE_CHECKING:  # geo.mosaic imports rasterio; only mosaic runs load it
    from geoseg_batch.geo.mosaic import MosaicSummary
    from geoseg_batch.geo.sources import SourceStore
    from geoseg_batch.geo.target_grid import MosaicGrid

MOSAIC_STORE = "mosaic.zarr"
"""The mosaic's zarr store in ``out``."""
COG_NAMES = {"mask": "mosaic_mask.tif", "probabilities": "mosaic_probabilities.tif"}
"""The mosaic's COGs: {zarr variable: file name}."""


def grid_record(grid: MosaicGrid) -> dict[str, Any]:
    """The mosaic grid as recorded in the summary and state.json: CRS, transform, shape, chunk."""
    return {"crs": str(grid.crs), "transform": [float(v) for v in tuple(grid.transform)[:6]],
            "shape": list(grid.shape), "chunk": grid.chunk}


def _built_as(job: MosaicJob, grid: MosaicGrid) -> dict[str, Any]:
    """What the mosaic's chunks are made with, as state.json records it: the grid, the merge rule and the zarr
    format (an incremental run that changes any of them rebuilds every chunk)."""
    return {**grid_record(grid), "merge": job.merge, "zarr_format": job.zarr_format}


def run_mosaic(job: MosaicJob, client: Any | None = None) -> JobResult:
    """Reproject and merge the scenes' predictions onto one grid, chunk by chunk on Dask; zarr + COGs.

    ``predictions`` and ``out`` may be in object storage (``s3://...``, with the job's ``storage:`` settings): a
    predict output prefix is read through its pointer, and ``out`` gets versions behind a pointer of its own.
    ``incremental``: the previous version's chunks are kept (hard links; server-side copies in object storage)
    and only the chunks
    touched by scenes that are new, changed or gone since then are recomputed (all of them
    when the target grid changed); the new version is published atomically. ``out`` is locked for the
    run: another run writing there is refused at once, or with ``wait`` waited for (and nothing done
    if it published this job's results).
    """
    from geoseg_batch.cluster import connect
    from geoseg_batch.geo.sources import grid_for, read_sources

    started = time.perf_counter()
    cloud = CloudSettings.of(job.storage)
    stores = prediction_stores(job.predictions, cloud)
    sources = read_sources([store for store, _ in stores.values()], cloud)
    grid = grid_for(sources, crs=job.crs, resolution=job.resolution, bounds=job.bounds, chunk=job.chunk)
    check_sizes(job, sources, grid, client)  # before anything of the grid's size exists
    keys = {stem: key for stem, (_, key) in stores.items()}
    out = output_location(job.out)
    storage = storage_for(out, cloud)
    key = config_digest(job_settings(job, predictions=[]), keys)
    with translated_os_errors(out), contextlib.ExitStack() as running:
        lease = running.enter_context(output_lease(out, job.wait, job.wait_timeout_s, storage))
        publication = Publication(out, key, incremental=job.incremental, overwrite=job.overwrite, lease=lease,
                                  storage=storage)
        if job.wait and (done := publication.finished()) is not None:
            return finished_result("mosaic", out, done, publication.finished_manifest())
        if client is None and job.cluster.scheduler:  # an existing cluster: its workers' limits are known once
            if not job.incremental:  # connected, and checked before anything is written
                storage.require_free(out, job.overwrite)
            client = running.enter_context(connect(job.cluster))
            check_sizes(job, sources, grid, client)
        return _publish(job, stores, grid, publication, client, started)


def _publish(job: MosaicJob, stores: dict[str, tuple[Location, str]], grid: MosaicGrid, publication: Publication,
             client: Any | None, started: float) -> JobResult:
    """Build the mosaic of ``stores`` on ``grid`` in the publication's stage and publish it; the job's result."""
    from geoseg_batch.geo.sources import chunks_touched

    out, paths = publication.out, [store for store, _ in stores.values()]
    keys = {stem: key for stem, (_, key) in stores.items()}
    cloud = CloudSettings.of(job.storage)
    with publication:
        footprints = {stem: chunks_touched(grid, [store], cloud) for stem, (store, _) in stores.items()}
        chunks = (publication.previous_state.chunks_to_rewrite(_built_as(job, grid), keys, footprints)
                  if publication.has_previous(MOSAIC_STORE) else None)
        if chunks is not None:
            publication.reuse(MOSAIC_STORE)
        cog_names = COG_NAMES if job.cog else {}
        built = _build(job, paths, grid, chunks, cog_names, publication, client)
        publication.record_state(RunState.for_mosaic(_built_as(job, grid), keys, footprints))
        output = {"zarr": str(publication.published(MOSAIC_STORE)),
                  **{("mask_cog" if v == "mask" else "probability_cog"): str(publication.published(n))
                     for v, n in cog_names.items()}}
        summary = _summary(job, grid, built, len(stores), chunks is not None, started)
        _write_report(job, output, summary, publication)
        publish_mosaic_stac(job, stores, output, publication, summary)  # in this version
        manifest = publication.write_manifest(command="mosaic", outputs=[output], summary=summary,
                                              config=resolved(job), inputs=keys)
    return JobResult("mosaic", out, manifest, [output], summary)


def check_sizes(job: MosaicJob, sources: list[SourceStore], grid: MosaicGrid, client: Any | None) -> None:
    """Raise ConfigError unless a chunk task of the mosaic fits a worker and the grid's chunks the client
    (:mod:`geoseg_batch.sizing`); the workers' limit is ``client``'s, else the embedded cluster's."""
    from geoseg_batch.geo.sources import SOURCE_MARGIN, finest_resolution, grid_for
    from geoseg_batch.sizing import SourceSize, budget_for, check_mosaic

    sizes = []
    for source in sources:
        xres, yres = finest_resolution([source], grid.crs)
        sizes.append(SourceSize(source.bands, 4 if source.probability_dtype == "float32" else 1, source.shape,
                                (grid.resolution[0] / xres, grid.resolution[1] / yres)))
    scenes = (grid_for(sources, job.crs, job.resolution, None, job.chunk).bounds
              if job.bounds is not None else None)
    check_mosaic(job, grid.shape, grid.resolution, sizes, SOURCE_MARGIN, budget_for(job.cluster, client), scenes)


def _build(job: MosaicJob, paths: list[Location], grid: MosaicGrid, chunks: set[tuple[int, int]] | None,
           cog_names: dict[str, str], publication: Publication, client: Any | None) -> MosaicSummary:
    """Write ``chunks`` (None: all) of the mosaic store in the stage, then its COGs (the previous ones when no
    chunk changed); the build's record. A cluster is started from ``job.cluster`` only when there is work."""
    from geoseg_batch.cluster import connect
    from geoseg_batch.geo.mosaic import build_mosaic
    from geoseg_batch.io.cog import write_cog
    from geoseg_batch.watch import watched

    store_path, cloud = publication.stage / MOSAIC_STORE, CloudSettings.of(job.storage)
    with ((connect(job.cluster) if client is None and chunks != set() else contextlib.nullcontext(client)) as active,
          watched(active, job.cluster.no_worker_timeout_s)):
        built = build_mosaic(paths, str(store_path), grid, job.merge, chunks=chunks, zarr_format=job.zarr_format,
                             client=active, cloud=cloud)
        unchanged = chunks == set() and publication.previous is not None  # the previous COGs, where it has them
        todo = {v: name for v, name in cog_names.items() if not (unchanged and publication.reuse(name))}
        if todo and active is None:  # nothing changed but a COG the previous version lacks: written here
            for variable, name in todo.items():
                write_cog(store_path, variable, publication.stage / name, job.chunk, cloud)
        elif todo:
            active.gather([active.submit(write_cog, store_path, variable, publication.stage / name, job.chunk, cloud,
                                         pure=False) for variable, name in todo.items()])
    return built


def _summary(job: MosaicJob, grid: MosaicGrid, built: MosaicSummary, scenes: int, incremental: bool, started: float
             ) -> dict[str, Any]:
    """The mosaic run's summary figures."""
    wall = time.perf_counter() - started
    megapixels = grid.shape[0] * grid.shape[1] / 1e6
    return {"scenes": scenes, "merge": job.merge, "megapixels": round(megapixels, 3),
            "chunks_total": built.chunks_total, "chunks_written": len(built.chunks_written),
            "chunks_per_worker": built.chunks_per_worker,
            "incremental": incremental, "wall_s": round(wall, 3), "mpx_per_s": round(megapixels / wall, 4),
            "grid": grid_record(grid)}


def _write_report(job: MosaicJob, output: dict[str, str], summary: dict[str, Any], publication: Publication) -> None:
    """Write the run report (with the mosaic's quicklooks) into the stage (built here and uploaded, in object
    storage); its published path goes into ``summary``."""
    from geoseg_batch.report import prediction_quicklooks, write_run_report

    if publication.storage.in_place:
        CloudSettings.of(job.storage).apply()  # GDAL reads the staged COGs over /vsis3/
    staged_cogs = {key: gdal_path(location(str(publication.stage / file_name(path)))) for key, path in output.items()
                   if key.endswith("_cog")}
    with publication.local_copy("report") as images_dir, publication.local_copy("report.html") as page:
        images = prediction_quicklooks(staged_cogs, images_dir, name="mosaic")
        summary["report"] = str(publication.published("report.html"))
        write_run_report(page, f"mosaic: {job.name}", summary, resolved(job), images)
