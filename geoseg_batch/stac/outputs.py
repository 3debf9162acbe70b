"""The STAC of a job's published results: Items made, the static collection written into the stage (so it
is part of the version published), and (``stac_api``) the Items posted to a STAC API.

A predict output's collection holds an Item per scene and the bundle's MLM Item, which they link to; a
mosaic's holds the mosaic's Item, linked to the predicted scenes' Items it was made from (those found
beside the stores it read). Both record where the collection is in the manifest's summary
(``summary["stac"]``; ``summary["stac_api"]`` for what was posted).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.storage import storage_for
from geoseg_batch.io.urls import Location, is_url, output_location, sibling
from geoseg_batch.io.urls import name as file_name
from geoseg_batch.stac.collection import (
    api_collection, api_item, collection_path, item_path, results_collection, static_documents,
)
from geoseg_batch.stac.results import Provenance, manifest_assets, mosaic_item, scene_item

if TYPE_CHECKING:
    from geoseg_batch.config import MosaicJob, PredictJob, StoreOutputs
    from geoseg_batch.io.publication import Publication
    from geoseg_batch.model.bundle import BundleMetadata
    from geoseg_batch.runs.scenes import ScenePlan

MOSAIC_ITEM = "mosaic"


def publish_predict_stac(job: PredictJob, metadata: BundleMetadata, plans: Sequence[ScenePlan],
                         publication: Publication, model_checksum: Mapping[str, str],
                         summary: dict[str, Any]) -> None:
    """Write the static collection of the predicted ``plans`` (an Item each, and the bundle's MLM Item) into
    the publication's stage, post it to ``job.stac_api`` when given; ``summary`` gets ``stac`` (and
    ``stac_api``)."""
    from geoseg_batch.stac.model_item import model_item, model_name

    created, results = _now(), _absolute(publication.results)
    checksum = model_checksum[str(job.model)]
    model_href = str(job.model) if is_url(job.model) else os.path.abspath(job.model)
    model = model_item(metadata, model_href, checksum, created)
    provenance = Provenance(metadata.classes, checksum, created, job.float_output, job.stitch, job.precision,
                            model_item=f"{results}/{item_path(model.id)}", model_name=model_name(job.model))
    items = [scene_item(p.stem, p.scene.geobox, manifest_assets(p.entry(results)),
                        _made_before(publication, p.stem, p.key, provenance), p.item, str(p.path), p.key)
             for p in plans]
    _publish(job, publication, [*items, model], f"{job.name}: scenes segmented by {model_name(job.model)}",
             summary)


def publish_mosaic_stac(job: MosaicJob, stores: Mapping[str, tuple[Location, str]], output: Mapping[str, str],
                        publication: Publication, summary: dict[str, Any]) -> None:
    """Write the static collection of the mosaic (``output``: its manifest entry; its grid and classes read from
    the staged store) into the publication's stage, post it to ``job.stac_api`` when given; ``summary`` gets
    ``stac`` (and ``stac_api``)."""
    from geoseg_batch.geo.sources import read_source

    cloud = CloudSettings.of(job.storage)
    store = read_source(str(publication.stage / file_name(output["zarr"])), cloud)
    sources = [found for location, _ in stores.values() if (found := _predicted_item(location, cloud))]
    checksums = {s.get("properties", {}).get("geoseg:model_checksum") for s in sources}
    model_link = next((link for s in sources for link in s.get("links", []) if "mlm:name" in link), None)
    provenance = Provenance(store.classes, checksums.pop() if len(checksums) == 1 else None, _now(),
                            store.probability_dtype == "float32",
                            model_item=model_link["href"] if model_link else None,
                            model_name=model_link["mlm:name"] if model_link else None)
    item = mosaic_item(MOSAIC_ITEM, store.grid.geobox, manifest_assets(_absolute_entry(output)), provenance,
                       sources, [str(location) for location, _ in stores.values()])
    _publish(job, publication, [item], f"{job.name}: mosaic of {len(stores)} predicted scenes", summary)


def _publish(job: StoreOutputs, publication: Publication, items: list[Any], description: str,
             summary: dict[str, Any]) -> None:
    """Write the collection of ``items`` into the stage; post it to ``job.stac_api`` when given; record both."""
    from geoseg_batch.stac.transactions import post_items

    collection = results_collection(job.stac_collection or getattr(job, "name"), description, items)
    for path, text in static_documents(collection, items, str(_absolute(publication.results))).items():
        publication.storage.write_text(publication.stage / path, text)
    summary["stac"] = str(_absolute(publication.published(collection_path())))
    if job.stac_api:
        posted = post_items(job.stac_api, api_collection(collection), [api_item(i, collection.id) for i in items])
        summary["stac_api"] = posted.record()


def _made_before(publication: Publication, stem: str, key: str, provenance: Provenance) -> Provenance:
    """``provenance``, dated when the previous version's Item of ``stem`` was made if that Item records the same
    content ``key`` (an incremental run reusing the scene's outputs keeps their time)."""
    from pystac.utils import str_to_datetime

    path = item_path(stem)
    if not key or not publication.has_previous(path):
        return provenance
    try:
        properties = json.loads(publication.storage.read_text(publication.previous / path))["properties"]
        made = str_to_datetime(properties["created"]) if properties.get("geoseg:key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return provenance
    return dataclasses.replace(provenance, created=made) if made is not None else provenance


def _predicted_item(store: Location, cloud: CloudSettings) -> dict[str, Any] | None:
    """The JSON of the predicted scene's Item beside the prediction store ``store`` (``href``: where it is, its
    hrefs made absolute), None when there is none (a store without a predict output's collection)."""
    where = output_location(str(store))
    path = where.parent / item_path(Path(where.name).stem)
    storage = storage_for(path, cloud)
    if not storage.exists(path):
        return None
    doc = json.loads(storage.read_text(path))
    href = str(_absolute(path))
    for link in doc.get("links", []):
        joined = sibling(href, link["href"])
        link["href"] = str(joined) if is_url(joined) else os.path.normpath(joined)
    return {**doc, "href": href}


def _absolute_entry(entry: Mapping[str, str]) -> dict[str, str]:
    """A manifest entry with local paths made absolute."""
    return {key: str(_absolute(output_location(value))) for key, value in entry.items()}


def _absolute(where: Any) -> Any:
    """``where`` (a Path or an ObjectPath) with a local path made absolute (links not followed)."""
    return Path(os.path.abspath(where)) if isinstance(where, Path) else where


def _now() -> dt.datetime:
    """This moment, in UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
