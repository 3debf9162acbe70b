"""A predict run's report: the quicklooks of its first :data:`REPORT_SCENES` scenes and its HTML page.

A shown scene's quicklook of its input is submitted with its tiles (:meth:`RunReport.submit_scene`: it needs no
output), and those of its outputs as soon as its COGs are written (:meth:`RunReport.submit`); both are called by
:func:`~geoseg_batch.runs.scene_flow.flow_scenes`, so they are drawn while other tiles run. The page is written at
the end (:meth:`RunReport.write`), with the quicklooks of the scenes not predicted by this run (incremental reuse)
drawn then.
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

    def submit_scene(self, work: SceneWork) -> None:
        """Submit the quicklook of ``work``'s input scene (its tiles just submitted) when it is shown and workers can
        write it into the stage, at the priority just below its model tasks. In the runs measured, a worker drew it
        (it decodes the whole scene) between two of the scene's model tasks while the other went on with the tiles;
        drawn after the COGs, as before, it made a 16 Mpx run 1.2 s slower (medians of 4, side by side: 24.2 against
        23.0 s)."""
        self._submit(work, ("scene",), work.after_tiles)

    def submit(self, work: SceneWork) -> None:
        """Submit the quicklooks of ``work``'s outputs (its COGs written), as :meth:`submit_scene`, at the priority
        of its products."""
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
