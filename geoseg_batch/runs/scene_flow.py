"""Many scenes, one run: each scene's products are made while the other scenes' tiles run.

A nightly run is many ordinary scenes. :func:`flow_scenes` overlaps what each scene costs besides its tiles:

- each scene's zarr store is created on the client and its tile graph submitted at once, scene after scene,
  so the workers predict the first scene's tiles while the client creates the later scenes' stores;
- as soon as the last tile task of a scene is done, its COGs and (``polygons``) polygon chunks are submitted, at
  :data:`PRODUCT_PRIORITY`: above every model task (those count down from 0 scene after scene,
  :func:`~geoseg_batch.infer.segment.segment_graph`), below blending, so a finished scene's products take the
  next free worker thread while later scenes' tiles wait their turn; a scene's polygons are joined and written
  on the client as soon as its chunks are done.

The tiles phase (``tiles_s``) runs from the first store created to the last tile done; it includes the products
of the scenes that finished before. ``cogs_s`` is what is left after the last tile: the last scenes' products.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.runs.scenes import COG_VARIABLES, ModelSession, ScenePlan

if TYPE_CHECKING:
    from geoseg_batch.config import PredictJob
    from geoseg_batch.infer.segment import TileRecord
    from geoseg_batch.infer.thumbnail import ThumbnailPiece, ThumbnailSpec
    from geoseg_batch.io.publication import Publication
    from geoseg_batch.model.bundle import BundleMetadata
    from geoseg_batch.monitor import TileProgress

PRODUCT_PRIORITY = 1
"""Dask priority of a scene's COG and polygon tasks: above every model task, below blending."""


@dataclass
class SceneWork:
    """One scene's work in flight: its tile futures still running, then its products'."""

    plan: ScenePlan
    tiles: set[str] = field(default_factory=set)  # keys of its tile futures not done yet
    cogs: list[Any] = field(default_factory=list)  # its COG futures, once submitted
    cogs_left: set[str] = field(default_factory=set)  # keys of those not done yet
    regions: list[Any] = field(default_factory=list)  # its polygon chunk futures, once submitted
    regions_left: set[str] = field(default_factory=set)  # keys of those not done yet
    done_before: int = 0  # its tiles recorded as done by an earlier attempt
    pieces: list[ThumbnailPiece] = field(default_factory=list)  # its tiles' thumbnail pieces, when asked


class SceneReport(Protocol):
    """What :func:`flow_scenes` tells the run report (:class:`~geoseg_batch.runs.predict_report.RunReport`)."""

    def thumbnail(self, plan: ScenePlan) -> ThumbnailSpec | None:
        """The thumbnail the scene's model tasks should sum for its input quicklook, or None."""

    def tiles_done(self, work: SceneWork) -> None:
        """The scene's tiles are all done (its thumbnail pieces collected)."""

    def cogs_written(self, work: SceneWork) -> None:
        """The scene's COGs are written."""


@dataclass
class FlowResult:
    """What :func:`flow_scenes` did: every tile record, the tiles recorded as done before, and when (perf_counter)
    the stores began, the last tile was done and the last product was written."""

    records: list[TileRecord]
    resumed: int
    started: float
    tiles_done: float
    products_done: float


def flow_scenes(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], publication: Publication,
                session: ModelSession, progress: TileProgress | None = None,
                report: SceneReport | None = None) -> FlowResult:
    """Predict ``plans`` into the stage and write each scene's products as soon as its tiles are done (see the
    module docstring), telling ``report`` when a scene's tiles are done and when its COGs are written (it submits
    the scene's quicklooks then); the :class:`FlowResult`. A failed task raises its error, a cancelled one
    CancelledError (the other futures are left running: :func:`~geoseg_batch.watch.watched` cancels them)."""
    from distributed import as_completed

    from geoseg_batch.monitor import checked_result

    started = time.perf_counter()
    flow = as_completed(with_results=True)
    owner: dict[str, SceneWork] = {}
    resumed = 0
    for work, futures in submitted_tiles(job, metadata, plans, publication, session, report):
        resumed += work.done_before
        owner.update({f.key: work for f in futures})
        flow.update(futures if futures else _submit_products(job, work, publication.stage, session.client, owner))
        if not futures and report is not None:
            report.tiles_done(work)
    records: list[TileRecord] = []
    tiles_done = time.perf_counter()
    for future, result in flow:
        checked_result(future, result)
        work = owner.pop(future.key)
        if future.key in work.tiles:
            work.tiles.discard(future.key)
            records.extend(result)
            work.pieces.extend(r.thumbnail for r in result if r.thumbnail is not None)
            tiles_done = time.perf_counter()
            if progress is not None:
                progress.advance(len(result), sum(r.pixels for r in result) / 1e6)
            if not work.tiles:
                flow.update(_submit_products(job, work, publication.stage, session.client, owner))
                if report is not None:
                    report.tiles_done(work)
        elif future.key in work.cogs_left:
            work.cogs_left.discard(future.key)
            if not work.cogs_left and report is not None:
                report.cogs_written(work)
        elif future.key in work.regions_left:
            work.regions_left.discard(future.key)
            if not work.regions_left:
                _write_polygons(work, publication.stage, session.client, CloudSettings.of(job.storage))
    return FlowResult(records, resumed, started, tiles_done, time.perf_counter())


def submitted_tiles(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], publication: Publication,
                    session: ModelSession, report: SceneReport | None = None) -> Iterator[tuple[SceneWork, list[Any]]]:
    """Per scene, as soon as its store is created (or found, when resuming) in the stage and its tile graph
    submitted: (its :class:`SceneWork`, its tile futures). A scene's model tasks queue after the previous scene's
    (priorities counting down); they sum the thumbnail ``report`` asks for."""
    from geoseg_batch.cluster import model_lanes
    from geoseg_batch.infer.segment import segment_graph
    from geoseg_batch.io.zarr_store import create_store

    lanes = model_lanes(session.client, session.gpu)
    cloud = CloudSettings.of(job.storage)
    tiles_before = 0
    for number, plan in enumerate(plans):
        target = create_store(publication.stage / plan.store, plan.scene.geobox, plan.grid.tile, metadata.classes,
                              metadata.threshold, job.float_output, job.zarr_format,
                              done_dir=publication.records_dir(plan.stem), cloud=cloud)
        done_before = len(target.done_tiles())  # a resumed scene's input quicklook is read, not summed
        graph = segment_graph(plan.scene, plan.grid, session.ref, target, job.stitch, gpu=session.gpu,
                              token=f"{number}-{plan.stem}", batch_size=job.batch_size, lanes=lanes,
                              priority=-tiles_before,
                              thumbnail=report.thumbnail(plan) if report and not done_before else None)
        tiles_before += math.prod(plan.grid.grid_shape)
        futures = session.client.compute(graph, retries=2) if graph else []
        yield SceneWork(plan, {f.key for f in futures}, done_before=done_before), futures


def _submit_products(job: PredictJob, work: SceneWork, stage: Any, client: Any,
                     owner: dict[str, SceneWork]) -> list[Any]:
    """Submit the scene's COGs and (``job.polygons``) polygon chunks, at :data:`PRODUCT_PRIORITY`, owned by
    ``work`` in ``owner``; their futures."""
    from geoseg_batch.geo.polygons import submit_regions
    from geoseg_batch.io.cog import write_cog
    from geoseg_batch.io.zarr_store import MASK_NODATA, PROBABILITY_SCALE

    cloud, plan = CloudSettings.of(job.storage), work.plan
    work.cogs = [client.submit(write_cog, stage / plan.store, variable, stage / plan.cog_name(variable),
                               plan.grid.tile, cloud, pure=False, priority=PRODUCT_PRIORITY)
                 for variable in COG_VARIABLES] if job.cog else []
    work.regions = submit_regions(client, stage / plan.store, MASK_NODATA,
                                  None if job.float_output else PROBABILITY_SCALE, cloud,
                                  priority=PRODUCT_PRIORITY) if job.polygons else []
    work.cogs_left, work.regions_left = {f.key for f in work.cogs}, {f.key for f in work.regions}
    owner.update({f.key: work for f in [*work.cogs, *work.regions]})
    if job.polygons and not work.regions:  # a store without chunks (cannot happen for a scene of pixels)
        _write_polygons(work, stage, client, cloud)
    return [*work.cogs, *work.regions]


def _write_polygons(work: SceneWork, stage: Any, client: Any, cloud: CloudSettings) -> None:
    """Join the scene's polygon chunks (all done) and write its GeoPackage, here on the client."""
    from geoseg_batch.geo.polygons import store_polygons

    plan = work.plan
    store_polygons(client.gather(work.regions), stage / plan.store, stage / plan.outputs()["polygons"], plan.stem,
                   cloud)
