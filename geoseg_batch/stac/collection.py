"""The results' static STAC collection: one ``pystac.Collection`` of their Items, inside the published results.

Layout, under the output's results (the directory, or the version's prefix in object storage)::

    stac/collection.json          the collection (extents: union of the Items' bboxes, their time range)
    stac/<item id>/<item id>.json each Item (predicted scenes, the mosaic, the model's MLM Item)

Every href between them, and from an Item to its assets (``../../<stem>.zarr``), is relative, so a
version of the output is consistent on its own wherever it is read (self-contained catalog: no self
links). It is written into the stage through the output's :class:`~geoseg_batch.io.storage.Storage`,
so each publish carries its own collection. For a STAC API the same Items are rendered with absolute
hrefs and without the static structure links (:func:`api_item`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import Any

STAC_DIR = "stac"
COLLECTION_NAME = "collection.json"
STRUCTURE_RELS = ("self", "root", "parent", "collection", "item")


def item_path(item_id: str) -> str:
    """Where Item ``item_id`` is in the results: ``stac/<id>/<id>.json``."""
    return f"{STAC_DIR}/{item_id}/{item_id}.json"


def collection_path() -> str:
    """Where the collection is in the results: ``stac/collection.json``."""
    return f"{STAC_DIR}/{COLLECTION_NAME}"


def results_collection(collection_id: str, description: str, items: Sequence[Any]) -> Any:
    """The ``pystac.Collection`` ``collection_id`` of ``items``: its extents are the union of their bboxes
    (Items without one, such as the model's, are left out of it) and the range of their times."""
    import pystac

    boxes = [item.bbox for item in items if item.bbox]
    spatial = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                max(b[3] for b in boxes)] if boxes else [-180.0, -90.0, 180.0, 90.0])
    times = [t for item in items for t in _times(item) if t is not None]
    temporal = [min(times), max(times)] if times else [None, None]
    return pystac.Collection(collection_id, description,
                             pystac.Extent(pystac.SpatialExtent([spatial]), pystac.TemporalExtent([temporal])),
                             license="other", catalog_type=pystac.CatalogType.SELF_CONTAINED)


def _times(item: Any) -> tuple[Any, Any]:
    """(start, end) of ``item``: its range, or its datetime twice."""
    common = item.common_metadata
    return (common.start_datetime or item.datetime), (common.end_datetime or item.datetime)


def static_documents(collection: Any, items: Sequence[Any], base: str) -> dict[str, str]:
    """{path in the results: JSON text} of the static collection of ``items``; hrefs under ``base`` (the
    results' published location) become relative to the document holding them."""
    collection_doc = collection.to_dict(include_self_link=False, transform_hrefs=False)
    collection_doc["links"] = ([_link("root", f"./{COLLECTION_NAME}", "application/json", collection.title)]
                               + [_link("item", f"./{item.id}/{item.id}.json", "application/geo+json", None)
                                  for item in items])
    documents = {collection_path(): collection_doc}
    for item in items:
        doc = _plain(item)
        doc["collection"] = collection.id
        doc["links"] = [*(_link(rel, f"../{COLLECTION_NAME}", "application/json", None)
                          for rel in ("root", "parent", "collection")), *doc["links"]]
        documents[item_path(item.id)] = _relative(doc, base, posixpath.dirname(item_path(item.id)))
    return {path: json.dumps(doc, indent=1) for path, doc in documents.items()}


def api_item(item: Any, collection_id: str) -> dict[str, Any]:
    """``item``'s JSON for a STAC API's collection ``collection_id``: absolute hrefs, no structure links (the
    API makes its own)."""
    doc = _plain(item)
    doc["collection"] = collection_id
    return doc


def api_collection(collection: Any) -> dict[str, Any]:
    """The collection's JSON for a STAC API (no links: the API makes its own)."""
    doc = collection.to_dict(include_self_link=False, transform_hrefs=False)
    doc["links"] = []
    return doc


def _plain(item: Any) -> dict[str, Any]:
    """``item``'s JSON with its own links only (no structure links)."""
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    doc["links"] = [link for link in doc.get("links", []) if link.get("rel") not in STRUCTURE_RELS]
    return doc


def _link(rel: str, href: str, media_type: str, title: str | None) -> dict[str, Any]:
    """A link object."""
    link = {"rel": rel, "href": href, "type": media_type}
    return {**link, "title": title} if title else link


def _relative(doc: dict[str, Any], base: str, directory: str) -> dict[str, Any]:
    """``doc`` with its asset and link hrefs under ``base`` made relative to ``directory`` (a path in the
    results)."""
    prefix = base.rstrip("/") + "/"

    def relative(href: str) -> str:
        """``href`` relative to ``directory`` when it is under ``base``, else as it is."""
        return posixpath.relpath(href[len(prefix):], directory) if href.startswith(prefix) else href

    for asset in doc.get("assets", {}).values():
        asset["href"] = relative(asset["href"])
    for link in doc.get("links", []):
        link["href"] = relative(link["href"])
    return doc
