"""A predict run's report: the quicklooks of its first :data:`REPORT_SCENES` scenes and its HTML page.

A shown scene's quicklook of its input is drawn as soon as its tiles are done, from the thumbnail its model tasks
summed from their own reads (:meth:`RunReport.thumbnail`, :mod:`~geoseg_batch.infer.thumbnail`): the scene is not
decoded again for it. Where the tasks could not sum it (a resumed scene, whose earlier tiles are not read again;
red, green or blue not among the model's bands), it is read decimated, as the quicklooks of the outputs are once
its COGs are written. :func:`~geoseg_batch.runs.scene_flow.flow_scenes` says when (:meth:`RunReport.tiles_done`,
:meth:`RunReport.cogs_written`), so they are drawn while other scenes' tiles run. The page is written at the end
(:meth:`RunReport.write`), with the quicklooks of the scenes not predicted by this run (incremental reuse) drawn
then.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg_batch.config import PredictJob, resolved
from geoseg_batch.io.publication import Publication
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import gdal_path, location
from geoseg_batch.runs.scenes import ModelSession, ScenePlan

if TYPE_CHECKING:
    from geoseg_batch.infer.thumbnail import ThumbnailSpec
    from geoseg_batch.runs.scene_flow import SceneWork

REPORT_SCENES = 8  # scenes shown in a run report (a nightly run may hold hundreds)
REPORT = "report"
"""The stage's folder of the report's images."""


class RunReport:
    """The report of one predict run of ``plans``, written into ``publication``'s stage."""

    def __init__(self, job: PredictJob, plans: list[ScenePlan], publication: Publication,
                 session: ModelSession | None) -> None:
        self.job, self.publication = job, publication
        self.shown = plans[:REPORT_SCENES] if job.cog else []
        self.shown_stems = {p.stem for p in self.shown}
        remote = publication.storage.in_place or any(p.scene.cloud is not None for p in plans)
        self.cloud = CloudSettings.of(job.storage) if remote else None
        # Workers write the PNGs where the report is built: in object storage that is this machine's temporary
        # folder, which workers elsewhere cannot see; the quicklooks are made here then.
        self.client = session.client if session and not publication.storage.in_place else None
        self.early: dict[str, dict[str, Any]] = {}  # stem: {kind: future} of the quicklooks submitted during the run

    def thumbnail(self, plan: ScenePlan) -> ThumbnailSpec | None:
        """The thumbnail ``plan``'s model tasks should sum for its input quicklook: for a shown scene whose
        quicklooks workers draw, when its red, green and blue bands are model inputs; else None."""
        from geoseg_batch.infer.thumbnail import thumbnail_spec

        if self.client is None or plan.stem not in self.shown_stems:
            return None
        return thumbnail_spec(_descriptions(plan), plan.scene.band_indexes, plan.grid.shape)

    def tiles_done(self, work: SceneWork) -> None:
        """Submit the quicklook of ``work``'s input scene (its tiles all done) when it is shown and workers draw it:
        from its thumbnail when every tile was summed by this run, else read decimated. Before, it was always read
        decimated, decoding the whole scene again: ~2.4-3.5 CPU-s for 16 Mpx, against 4.7-5.9 for all the model
        tasks of the near-free bench model; drawn from the thumbnail, 0.3-0.4 s."""
        from geoseg_batch.runs.scene_flow import PRODUCT_PRIORITY

        plan = work.plan
        if self.client is None or plan.stem not in self.shown_stems:
            return
        spec = None if work.done_before else self.thumbnail(plan)
        if spec is None:
            self._submit(work, ("scene",), PRODUCT_PRIORITY)
            return
        from geoseg_batch.infer.thumbnail import assembled
        from geoseg_batch.report.quicklooks import raster_name

        stack = assembled(work.pieces, plan.grid.shape, spec)
        name = raster_name(plan.scene.dataset)
        self.early.setdefault(plan.stem, {})["scene"] = self.client.submit(  # after its COGs, submitted just before
            _thumbnail_quicklook, stack, list(spec.names), plan.grid.shape, name, plan.stem,
            self.publication.stage / REPORT, pure=False, priority=PRODUCT_PRIORITY - 1)

    def cogs_written(self, work: SceneWork) -> None:
        """Submit the quicklooks of ``work``'s outputs (its COGs written), when it is shown and workers draw them,
        at the priority of its products."""
        from geoseg_batch.report import QUICKLOOK_SOURCES
        from geoseg_batch.runs.scene_flow import PRODUCT_PRIORITY

        self._submit(work, tuple(kind for kind in QUICKLOOK_SOURCES if kind != "scene"), PRODUCT_PRIORITY)

    def _submit(self, work: SceneWork, kinds: tuple[str, ...], priority: int) -> None:
        """Submit the quicklooks ``kinds`` of ``work``'s scene at ``priority``, when it is shown and workers can
        write them into the stage."""
        if self.client is None or work.plan.stem not in self.shown_stems:
            return
        self.early.setdefault(work.plan.stem, {}).update(
            _submitted(self.client, self._entry(work.plan), self.publication.stage / REPORT, self.cloud, priority,
                       kinds))

    def write(self, summary: dict[str, Any], drawn: Callable[[], None]) -> None:
        """Write the run report into the stage: its quicklooks (those not submitted yet, now: one task per image
        on the client's workers, side by side; here without a client), then ``drawn()`` (the run's wall time ends
        there: it adds it to ``summary``), then its page, whose published path goes into ``summary``."""
        from geoseg_batch.report import QUICKLOOK_SOURCES, write_run_report

        publication = self.publication
        with publication.local_copy(REPORT) as images_dir, publication.local_copy("report.html") as page:
            if self.client is None:
                images = [image for p in self.shown for image in _cloud_quicklooks(self.cloud, self._entry(p),
                                                                                    images_dir)]
            else:
                futures = [self._quicklook(p, kind, images_dir) for p in self.shown for kind in QUICKLOOK_SOURCES]
                images = [image for images in self.client.gather(futures) for image in images]
            drawn()
            summary["report"] = str(publication.published("report.html"))
            write_run_report(page, f"predict: {self.job.name}", summary, resolved(self.job), images)

    def _quicklook(self, plan: ScenePlan, kind: str, images_dir: Path) -> Any:
        """The future of ``plan``'s quicklook ``kind``: the one submitted during the run, else submitted now."""
        early = self.early.get(plan.stem, {})
        if kind in early:
            return early[kind]
        return _submitted(self.client, self._entry(plan), images_dir, self.cloud, 0, (kind,))[kind]

    def _entry(self, plan: ScenePlan) -> dict[str, Any]:
        """The scene's manifest entry in the stage, its files named as GDAL opens them, with its name."""
        return {**_gdal_paths(plan.entry(self.publication.stage)), "scene": plan.scene.dataset, "name": plan.stem}


def _submitted(client: Any, entry: dict[str, Any], out_dir: Path, cloud: CloudSettings | None,
               priority: int, kinds: tuple[str, ...]) -> dict[str, Any]:
    """One task per quicklook ``kinds`` of ``entry`` on ``client`` (Dask ``priority``); {kind: its future}."""
    return {kind: client.submit(_cloud_quicklooks, cloud, entry, out_dir, kinds=(kind,), pure=False,
                                priority=priority) for kind in kinds}


def _descriptions(plan: ScenePlan) -> tuple[str | None, ...]:
    """The band names of ``plan``'s scene file, as its quicklook reads them: the descriptions rioxarray put on the
    scene's data when it opened it (``long_name``; none: no names). Nothing is read here, the scene may be remote."""
    count = int(plan.scene.data.sizes["band"])
    names = plan.scene.data.attrs.get("long_name")
    names = (names,) if isinstance(names, str) else tuple(names or ())
    return names if len(names) == count else (None,) * count


def _thumbnail_quicklook(stack: Any, names: list[str], full_shape: tuple[int, int], scene_name: str, stem: str,
                         out_dir: Path) -> list[tuple[str, Path]]:
    """The input quicklook of scene ``stem`` drawn from its thumbnail ``stack``, as
    :func:`~geoseg_batch.report.prediction_quicklooks` returns it: [(caption, png)]."""
    from geoseg_batch.report.quicklooks import thumbnail_quicklook_png

    png = thumbnail_quicklook_png(stack, names, full_shape, scene_name, Path(out_dir) / f"{stem}_scene.png")
    return [(f"{stem}: scene ({scene_name})", png)]


def _gdal_paths(entry: dict[str, Any]) -> dict[str, Any]:
    """A manifest entry whose files are named as GDAL opens them (``/vsis3/bucket/key`` for ``s3://bucket/key``)."""
    return {key: gdal_path(location(value)) if isinstance(value, str) else value for key, value in entry.items()}


def _cloud_quicklooks(cloud: CloudSettings | None, entry: dict[str, Any], out_dir: Path,
                      **options: Any) -> list[tuple[str, Path]]:
    """:func:`~geoseg_batch.report.prediction_quicklooks` of ``entry``, with ``cloud`` (when scenes are in object
    storage) applied to GDAL here, on the worker that runs it."""
    from geoseg_batch.report import prediction_quicklooks

    if cloud is not None:
        cloud.apply()
    return prediction_quicklooks({k: v for k, v in entry.items() if k != "name"}, out_dir, name=entry["name"],
                                 **options)
