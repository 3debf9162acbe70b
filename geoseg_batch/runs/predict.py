"""run_predict: every scene segmented tile by tile on the cluster; zarr + COGs per scene, published atomically."""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geoseg_batch.config import PredictJob, resolved
from geoseg_batch.io.oserrors import translated_os_errors
from geoseg_batch.io.publication import Publication, output_lease
from geoseg_batch.io.publish import checksums
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.storage import Storage, storage_for
from geoseg_batch.io.urls import output_location
from geoseg_batch.io.state import RunState
from geoseg_batch.runs.predict_report import RunReport
from geoseg_batch.runs.result import JobResult, finished_result
from geoseg_batch.runs.scenes import (
    ModelSession, ScenePlan, check_sizes, gridded, hashed_inputs, item_record, keyed, model_session, plan_scenes,
    run_key, scene_keys,
)
from geoseg_batch.stac.outputs import publish_predict_stac

if TYPE_CHECKING:
    from geoseg_batch.model.bundle import BundleMetadata
    from geoseg_batch.monitor import PeakMemory

log = logging.getLogger(__name__)

def run_predict(job: PredictJob, client: Any | None = None) -> JobResult:
    """Segment every scene tile by tile on the cluster; zarr + COGs per scene, published atomically.

    Everything is validated (bundle, scenes, tile size, output path) and every size the run
    will need is checked against the workers' and the client's memory (:mod:`geoseg_batch.sizing`)
    before a cluster is started or a file written; then ``out`` is locked for the run (another run writing there:
    refused at once, or with ``wait`` waited for, and nothing done if it published this job's
    results). Resumable: the staging directory is named after the job's
    settings and input checksums and records finished tiles, so re-running a killed job
    computes only the rest. ``incremental``: scenes whose content and settings are unchanged
    since the last run keep their outputs (hard links), only the others are predicted, and
    ``out`` switches to the new version in one atomic step.
    """
    from geoseg_batch.cluster import start_worker_fork_server
    from geoseg_batch.geo.plausibility import scene_checks
    from geoseg_batch.model.bundle import read_metadata
    from geoseg_batch.monitor import PeakMemory

    started = time.perf_counter()
    if client is None and not (job.dry_run or job.incremental or job.wait):  # a cluster will be started
        start_worker_fork_server(job.cluster)  # the workers' imports overlap the planning below
    out, cloud = output_location(job.out), CloudSettings.of(job.storage)
    metadata = read_metadata(job.model, cloud)  # a URL: before any cluster
    plans = plan_scenes(job, metadata, client)
    if (done := _without_running(job, metadata, plans, client, out)) is not None:
        return done
    plausibility = scene_checks({p.stem: p.scene for p in plans}, metadata, job.strict)  # --strict: refuses here
    storage = storage_for(out, cloud)
    with translated_os_errors(out), contextlib.ExitStack() as running:
        lease = running.enter_context(output_lease(out, job.wait, job.wait_timeout_s, storage))  # before any work
        if client is None and job.cluster.scheduler:
            client, plans = _existing_cluster(job, metadata, plans, storage, running)
        model_checksum = checksums([job.model], cloud)  # first: names the model plugin
        model_digest = model_checksum[str(job.model)]
        sums, session = hashed_inputs(job, plans, model_digest, client, running, storage)
        plans = keyed(plans, job, model_checksum, sums)
        publication = Publication(out, run_key(plans, job), incremental=job.incremental, overwrite=job.overwrite,
                                  lease=lease, storage=storage)
        if job.wait and (done := publication.finished()) is not None:
            return finished_result("predict", out, done, publication.finished_manifest())
        with publication, PeakMemory() as memory:
            reused = publication.previous_state.reusable_scenes(scene_keys(plans))
            for plan in plans:
                for name in plan.outputs().values() if plan.stem in reused else ():
                    publication.reuse(name)
            todo = [p for p in plans if p.stem not in reused]
            if todo and session is None:
                session = running.enter_context(model_session(job, model_digest, client))
            report = RunReport(job, plans, publication, session)  # its quicklooks start with the products
            summary = {"scenes": len(plans), "scenes_predicted": len(todo), "scenes_reused": len(reused),
                       **_predict_scenes(job, metadata, todo, publication, session, memory, report),
                       "plausibility": plausibility, "zarr_georeferencing": _zarr_readers(plans, job.zarr_format)}
            publication.record_state(RunState.for_scenes({p.stem: (str(p.path), p.key) for p in plans},
                                                         {p.stem: item_record(p) for p in plans if p.item}))
            report.write(summary, lambda: _add_speed(summary, started, len(todo)))  # wall time: quicklooks drawn
            publish_predict_stac(job, metadata, plans, publication, model_checksum, summary)  # in this version
            outputs = [p.entry(publication.results) for p in plans]
            manifest = publication.write_manifest(command="predict", outputs=outputs, summary=summary,
                                                  config=resolved(job), inputs={**model_checksum, **sums})
    return JobResult("predict", out, manifest, outputs, summary)


def _without_running(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], client: Any | None,
                     out: Any) -> JobResult | None:
    """The result of a run that stops after planning (None for one that goes on): an incremental run whose STAC
    search found nothing, and a dry run (the plan only: no cluster, no hashing, no pixel read, nothing written).
    Its sizes are checked first (ConfigError when too big), before hashing or a cluster."""
    if not plans:
        return _nothing_to_do(job, out)
    check_sizes(job, metadata, plans, client)
    if not job.dry_run:
        return None
    from geoseg_batch.runs.dry_run import dry_run_result

    return dry_run_result(job, metadata, plans, client, out)


def _nothing_to_do(job: PredictJob, out: Any) -> JobResult:
    """The result of an incremental run whose STAC search found no Items: nothing done, nothing published (the
    last published results stay as they are); logged as such."""
    log.info("predict: the search of %s found no Items: nothing to do (%s keeps what it holds)", job.stac.url, out)
    return JobResult("predict", out, out / "manifest.json", [], {"scenes": 0, "nothing_to_do": True})


def _zarr_readers(plans: list[ScenePlan], zarr_format: int) -> dict[str, str]:
    """{stem: which readers see its zarr store's georeferencing} (the COGs carry it for every grid)."""
    from geoseg_batch.io.zarr_store import gdal_georeferencing

    return {p.stem: gdal_georeferencing(p.scene.geobox, zarr_format) for p in plans}


def _existing_cluster(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], storage: Storage,
                      running: contextlib.ExitStack) -> tuple[Any, list[ScenePlan]]:
    """(a client on ``job.cluster.scheduler``, connected on ``running`` once ``out`` is known free; ``plans`` with
    the grids of the auto tile for its workers, when the job leaves the tile to the planner): the workers' memory
    limits are known only then, and the job's sizes are checked against them before anything is written."""
    from geoseg_batch.cluster import connect
    from geoseg_batch.sizing import budget_for

    if not job.incremental:
        storage.require_free(output_location(job.out), job.overwrite)
    client = running.enter_context(connect(job.cluster))
    if job.tile is None:
        plans = gridded(job, metadata, plans, budget_for(job.cluster, client))
    check_sizes(job, metadata, plans, client)
    return client, plans


def _add_speed(summary: dict[str, Any], started: float, scenes: int) -> None:
    """Add the run's wall time and speed to ``summary`` and log the run's one-line summary."""
    from geoseg_batch.monitor import RunSummary

    summary["wall_s"] = round(time.perf_counter() - started, 3)
    summary["mpx_per_s"] = round(summary["megapixels"] / summary["wall_s"], 4)
    log.info("%s", RunSummary.of(scenes, summary["tiles_total"], summary["tiles_computed"],
                                 summary["megapixels"], summary["wall_s"],
                                 summary["peak_worker_rss_bytes"] or None,
                                 tiles_skipped=summary["tiles_skipped"]).format())


def _no_work_figures(job: PredictJob, plans: list[ScenePlan]) -> dict[str, Any]:
    """The summary figures of predicting ``plans``, before any tile ran."""
    megapixels = sum(p.grid.shape[0] * p.grid.shape[1] for p in plans) / 1e6
    return {"megapixels": round(megapixels, 3), "tiles_total": sum(math.prod(p.grid.grid_shape) for p in plans),
            "tiles_computed": 0, "tiles_skipped": 0, "tiles_resumed": 0, "stitch": job.stitch,
            "tile": plans[0].grid.tile if plans else job.tile,
            "halo": plans[0].grid.halo if plans else None, "overlap_fraction": 0.0,
            "peak_worker_rss_bytes": 0, "peak_tree_rss_bytes": 0}


def _predict_scenes(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], publication: Publication,
                    session: ModelSession | None, memory: PeakMemory, report: RunReport) -> dict[str, Any]:
    """Predict ``plans`` into the stage (skipping tiles recorded as done), each scene's products written (and
    ``report``'s quicklooks of it started) as soon as its tiles are done (:mod:`~geoseg_batch.runs.scene_flow`);
    the work's summary figures."""
    from geoseg_batch.cluster import worker_memory
    from geoseg_batch.infer.stages import stage_totals
    from geoseg_batch.monitor import TileProgress
    from geoseg_batch.runs.scene_flow import flow_scenes
    from geoseg_batch.watch import watched

    figures = _no_work_figures(job, plans)
    if not plans or session is None:
        return figures  # nothing new: no cluster, no model
    megapixels, tiles_total = sum(p.grid.shape[0] * p.grid.shape[1] for p in plans) / 1e6, figures["tiles_total"]
    log.info("predict: %d scenes, %d tiles (%s stitch, tile %d, halo %d) on %s", len(plans), tiles_total,
             job.stitch, plans[0].grid.tile, plans[0].grid.halo, session.client.dashboard_link)
    done_before = sum(len(publication.storage.list(publication.records_dir(p.stem))) for p in plans)
    todo = tiles_total - done_before
    with (watched(session.client, job.cluster.no_worker_timeout_s, _saved(publication, plans, tiles_total)),
          TileProgress(todo, megapixels * todo / max(tiles_total, 1)) as progress):
        flow = flow_scenes(job, metadata, plans, publication, session, progress, report)
    # With many scenes the phases overlap: tiles_s includes the products of scenes done before the last tile
    # (and every store's creation); cogs_s is what is left after the last tile.
    phases = {"setup_s": round(flow.started - session.started, 3), "tiles_s": round(flow.tiles_done - flow.started, 3),
              "cogs_s": round(flow.products_done - flow.tiles_done, 3)}
    log.info("predict: setup %.1f s, tiles %.1f s, COGs %.1f s (%d tiles done before)", *phases.values(),
             flow.resumed)
    model_pixels = sum(r.model_pixels for r in flow.records)
    computed = [r for r in flow.records if r.computed]
    figures.update({
        "tiles_computed": len(computed), "tiles_skipped": len(flow.records) - len(computed),
        "tiles_resumed": flow.resumed, "tiles_per_worker": dict(collections.Counter(r.worker for r in flow.records)),
        "overlap_fraction": round(model_pixels / max(megapixels * 1e6, 1) - 1, 4),
        "phases": phases, "stage_seconds": stage_totals(r.seconds for r in flow.records),
    })
    memory.sample()
    # Workers of an external cluster are not our children: their current memory is a lower bound.
    figures["peak_worker_rss_bytes"] = memory.peak_children_bytes or worker_memory(session.client)
    figures["peak_tree_rss_bytes"] = memory.peak_tree_bytes
    return figures


def _saved(publication: Publication, plans: list[ScenePlan], total: int) -> Callable[[], str]:
    """What a failed or interrupted run says is saved: the tiles of ``plans`` recorded as done in the stage."""
    from geoseg_batch.watch import saved_tiles

    def saved() -> str:
        done = sum(len(publication.storage.list(publication.records_dir(p.stem))) for p in plans)
        return saved_tiles(done, total, publication.stage)

    return saved
