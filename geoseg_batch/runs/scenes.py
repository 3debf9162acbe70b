"""What a predict run works on: one :class:`ScenePlan` per scene, and the model session that predicts them.

A plan is made once per scene, after the scene was opened and validated; it is the one
place that knows a scene's outputs (their names in ``out``, its manifest entry) and the
content key its outputs are made from (what incremental runs compare).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg_batch.config import PredictJob
from geoseg_batch.errors import ConfigError
from geoseg_batch.io.publish import checksums, config_digest
from geoseg_batch.io.storage import Storage
from geoseg_batch.io.urls import Location, output_location
from geoseg_batch.io.urls import stem as url_stem
from geoseg_batch.runs.settings import job_settings

if TYPE_CHECKING:  # the geo modules import rasterio and xarray; only predict runs load them
    from geoseg_batch.geo.grid import TileGrid
    from geoseg_batch.geo.scene import Scene
    from geoseg_batch.model.bundle import BundleMetadata

COG_VARIABLES = ("mask", "probabilities")
"""The zarr variables written as COGs, in the order they are written."""


@dataclass(frozen=True)
class ScenePlan:
    """One scene of a predict run: where it is, its outputs' stem, the opened scene, its tile grid, its
    content key, and which optional outputs (COGs, polygons) the job makes."""

    path: Location  # a Path, or an object-storage URL; for a STAC Item, its self href
    stem: str
    scene: Scene
    grid: TileGrid | None  # None only while planning
    key: str = ""
    with_cogs: bool = True
    with_polygons: bool = False
    item: dict[str, Any] | None = None  # the STAC Item (JSON) the scene was found as, for a scene from --stac
    identity: str | None = None  # the scene's checksum when known up front (a STAC Item's: id, updated, ETags)

    @property
    def store(self) -> str:
        """The name of the scene's zarr store."""
        return f"{self.stem}.zarr"

    def cog_name(self, variable: str) -> str:
        """The name of the COG of zarr ``variable`` ("mask" or "probabilities")."""
        return f"{self.stem}_{variable}.tif"

    def outputs(self) -> dict[str, str]:
        """{manifest key: file name} of everything made from the scene, in manifest order."""
        names = {"zarr": self.store}
        if self.with_cogs:
            names.update({"mask_cog": self.cog_name("mask"), "probability_cog": self.cog_name("probabilities")})
        if self.with_polygons:
            names["polygons"] = f"{self.stem}_polygons.gpkg"
        return names

    def entry(self, directory: Path) -> dict[str, Any]:
        """The scene's entry in the manifest's outputs: the scene, and the paths of its outputs in ``directory``."""
        return {"scene": str(self.path), **{key: str(directory / name) for key, name in self.outputs().items()}}


def plan_scenes(job: PredictJob, metadata: BundleMetadata, client: Any | None = None) -> list[ScenePlan]:
    """The job's scenes (files, then the Items its ``stac:`` search finds), opened and checked against the model
    (``metadata``), with their tile grids (:func:`gridded`: the auto tile for ``client``'s workers, else the
    embedded cluster's); no key yet. [] only for an incremental run whose search found nothing.

    Raises ConfigError for a tile size that is not a multiple of the model's size multiple
    and for scenes sharing a file name (their outputs would collide); MissingInputError for a one-off run whose
    search matched no Items.
    """
    from geoseg_batch.geo.grid import round_up
    from geoseg_batch.sizing import budget_for

    multiple = metadata.size_multiple
    if job.tile is not None and job.tile % multiple:
        raise ConfigError(
            f"tile size {job.tile} is not a multiple of the model's size multiple {multiple} (2**depth); "
            f"use --tile {round_up(job.tile, multiple)}"
        )
    plans = _file_plans(job, metadata) + _item_plans(job, metadata)
    stems = [p.stem for p in plans]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"scenes share a file name ({stems}); outputs are named after it, rename one")
    return gridded(job, metadata, plans, budget_for(job.cluster, client))


def gridded(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], budget: Any) -> list[ScenePlan]:
    """``plans`` with their tile grids: tiles of ``job.tile``, else of the auto tile whose tasks fit ``budget``
    (:func:`~geoseg_batch.runs.tile_size.job_tile`), grown by the job's halo (:func:`halo_of`, rounded up)."""
    from geoseg_batch.geo.grid import TileGrid, round_up
    from geoseg_batch.runs.tile_size import job_tile

    multiple = metadata.size_multiple
    halo = round_up(halo_of(job, metadata), multiple)
    tile = job_tile(job, metadata, halo, budget)
    return [dataclasses.replace(p, grid=TileGrid(p.scene.shape, tile, halo, multiple)) for p in plans]


def _file_plans(job: PredictJob, metadata: BundleMetadata) -> list[ScenePlan]:
    """Plans (no grid yet) of the scene files the job names (paths, URLs, patterns, a list file)."""
    from geoseg_batch.geo.scene import open_scene, scene_paths
    from geoseg_batch.io.remote import CloudSettings

    if not job.scenes and job.scene_list is None:
        return []
    cloud = CloudSettings.of(job.storage)
    paths = scene_paths(job.scenes, job.scene_list, cloud)
    return [ScenePlan(path, url_stem(path), open_scene(path, metadata, bands=job.bands, nodata=job.nodata,
                                                       resample=job.resample, resampling=job.resampling, cloud=cloud),
                      None, with_cogs=job.cog, with_polygons=job.polygons) for path in paths]


def _item_plans(job: PredictJob, metadata: BundleMetadata) -> list[ScenePlan]:
    """Plans (no grid yet) of the Items the job's ``stac:`` search finds, each opened through its stacked VRT."""
    from geoseg_batch.errors import MissingInputError
    from geoseg_batch.geo.scene import open_scene
    from geoseg_batch.io.remote import CloudSettings
    from geoseg_batch.stac.catalog import find_items
    from geoseg_batch.stac.item_scene import item_scene

    if job.stac is None:
        return []
    cloud = CloudSettings.of(job.storage)
    items = find_items(job.stac, cloud)
    if not items and not job.incremental:
        raise MissingInputError(f"stac: the search of {job.stac.url} matched no Items ({_filters(job)}); widen "
                                "bbox or datetime, or check the collection id")
    kernel = job.resampling if job.resample else "nearest"
    plans = []
    for item in items:
        found = item_scene(item, metadata, job.stac.assets, cloud, str(job.stac.url), kernel)
        scene = open_scene(found.location, metadata, nodata=job.nodata, resample=job.resample,
                           resampling=job.resampling, cloud=cloud, source=found.dataset)
        plans.append(ScenePlan(found.location, found.stem, scene, None, with_cogs=job.cog,
                               with_polygons=job.polygons, item=item, identity=found.checksum))
    return plans


def _filters(job: PredictJob) -> str:
    """The search's filters as one phrase, e.g. "collections ['s2'], bbox [...]"."""
    spec = job.stac
    given = {name: getattr(spec, name) for name in ("collections", "bbox", "datetime", "query", "ids")}
    return ", ".join(f"{name} {value}" for name, value in given.items() if value) or "no filters"


def halo_of(job: PredictJob, metadata: BundleMetadata) -> int:
    """The halo the job's tiles are grown by (before rounding up to the size multiple): the model's receptive
    radius for ``exact`` stitching, the overlap (default half of it) for ``blend``."""
    overlap = job.overlap if job.overlap is not None else metadata.receptive_radius // 2
    return metadata.receptive_radius if job.stitch == "exact" else overlap


def check_sizes(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], client: Any | None) -> None:
    """Raise ConfigError unless the job's model tasks fit a worker and its tiles the client (:mod:`sizing`).

    The workers' memory limit is ``client``'s workers', else the embedded cluster's the job would start
    (an existing scheduler's is checked again once connected).
    """
    from geoseg_batch.geo.grid import round_up
    from geoseg_batch.runs.tile_size import job_tile
    from geoseg_batch.sizing import budget_for, check_predict

    budget = budget_for(job.cluster, client)
    halo = plans[0].grid.halo if plans else round_up(halo_of(job, metadata), metadata.size_multiple)
    tile = plans[0].grid.tile if plans else job_tile(job, metadata, halo, budget)
    check_predict(job, metadata, [p.grid.shape for p in plans], halo, budget, tile)


def keyed(plans: list[ScenePlan], job: PredictJob, model_checksum: dict[str, str],
          sums: dict[str, str]) -> list[ScenePlan]:
    """The plans with their content keys: the job's settings, the model's and the scene's checksums."""
    settings = content_settings(job, plans)
    return [dataclasses.replace(p, key=config_digest(settings, {**model_checksum, "scene": sums[str(p.path)]}))
            for p in plans]


def run_key(plans: list[ScenePlan], job: PredictJob) -> str:
    """The key of the whole run (its staging directory's name): the settings and every scene's key."""
    return config_digest(content_settings(job, plans), scene_keys(plans))


def content_settings(job: PredictJob, plans: list[ScenePlan]) -> dict[str, Any]:
    """The settings the keys of ``plans`` are made from: the job's, less its inputs, with the tile its grids use
    (an auto tile depends on the workers' memory, which is not content: a job keys as with that ``--tile``)."""
    tile = plans[0].grid.tile if plans and plans[0].grid is not None else job.tile
    return job_settings(job, scenes=[], scene_list=None, stac=None, tile=tile)


def item_record(plan: ScenePlan) -> dict[str, Any]:
    """What the run state records of a STAC Item's plan: its id, collection, ``updated`` and checksum."""
    item = plan.item or {}
    return {"id": item.get("id"), "collection": item.get("collection"),
            "updated": (item.get("properties") or {}).get("updated"), "checksum": plan.identity}


def scene_keys(plans: list[ScenePlan]) -> dict[str, str]:
    """{stem: content key} of ``plans``."""
    return {p.stem: p.key for p in plans}


@dataclass(frozen=True)
class ModelSession:
    """A cluster with the job's model loaded on every worker."""

    client: Any
    ref: Any  # PredictorRef
    gpu: bool  # model tasks ask for a GPU
    started: float  # perf_counter() when the cluster was asked for


@contextlib.contextmanager
def model_session(job: PredictJob, model_digest: str, client: Any | None) -> Iterator[ModelSession]:
    """``client`` (or a cluster started from ``job.cluster``, closed on exit) with the model (whose
    checksum is ``model_digest``) registered."""
    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, cluster_gpus, connect
    from geoseg_batch.infer.predictor import register_model
    from geoseg_batch.io.remote import CloudSettings

    started = time.perf_counter()
    with (connect(job.cluster, MODEL_WORKER_IMPORTS) if client is None else contextlib.nullcontext(client)) as active:
        gpus = cluster_gpus(active)
        if job.gpu and not gpus:  # model tasks asking for GPU=1 would wait for such a worker forever
            raise ConfigError("gpu: true (--gpu), but no worker of the cluster advertises a GPU (resources GPU=1); "
                              "start GPU workers (`dask cuda worker` / cluster.gpus), or drop --gpu")
        ref = register_model(active, job.model, model_digest, job.precision, CloudSettings.of(job.storage))
        yield ModelSession(active, ref, job.gpu if job.gpu is not None else gpus > 0, started)


def scene_checksums(plans: list[ScenePlan], cloud: Any) -> dict[str, str]:
    """{scene path: checksum} of ``plans``: a file's SHA-256, an object's ETag and size (see
    :func:`~geoseg_batch.io.publish.checksums`), a STAC Item's identity (:attr:`ScenePlan.identity`)."""
    known = {str(p.path): p.identity for p in plans if p.identity is not None}
    return {**checksums([p.path for p in plans if p.identity is None], cloud), **known}


def hashed_inputs(job: PredictJob, plans: list[ScenePlan], model_digest: str, client: Any | None,
                  running: contextlib.ExitStack, storage: Storage) -> tuple[dict[str, str], ModelSession | None]:
    """:func:`scene_checksums` of the plans, and (unless ``job.incremental`` or ``job.wait``) the model session
    on ``running``, started while the scenes are hashed (hashlib and file reads release the GIL)."""
    from geoseg_batch.io.remote import CloudSettings

    cloud = CloudSettings.of(job.storage)
    if job.incremental or job.wait:  # unchanged scenes (or all: the run waited for) are reused: start nothing
        return scene_checksums(plans, cloud), None
    storage.require_free(output_location(job.out), job.overwrite)  # fail before starting a cluster
    with concurrent.futures.ThreadPoolExecutor(1) as hasher:
        hashed = hasher.submit(scene_checksums, plans, cloud)
        session = running.enter_context(model_session(job, model_digest, client))
        return hashed.result(), session
