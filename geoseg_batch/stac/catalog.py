"""Searching a STAC catalog: the Items a job's ``stac:`` section names, as plain Item JSON.

A catalog is either a **STAC API** (a landing page that conforms to Item Search: searched
through pystac-client, every filter sent to the server) or a **static file**: a catalog or
collection (its Items found by following its links) or an ItemCollection (a search saved
to a file), read from a path or a URL and filtered here the same way (collections, ids,
bbox, datetime; ``query`` needs an API). Every request is bounded by ``timeout_s``; what
goes wrong is one :class:`~geoseg_batch.errors.CatalogError` line naming the catalog.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geoseg_batch.config import StacSpec
from geoseg_batch.errors import CatalogError
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import is_url, protocol, sibling

STATIC_TYPES = ("Catalog", "Collection", "FeatureCollection")


def find_items(spec: StacSpec, cloud: CloudSettings | None = None) -> list[dict[str, Any]]:
    """The Items (JSON, absolute asset hrefs, sorted by collection and id) that ``spec`` finds; [] when none match.

    Raises CatalogError when the catalog cannot be reached or read, or holds a malformed Item."""
    url = str(spec.url)
    found = _static_items(spec, cloud or CloudSettings.of()) if _is_static(url) else _searched_items(spec)
    items = [checked_item(item, url) for item in found]
    return sorted(items, key=lambda item: (str(item.get("collection") or ""), item["id"]))


def _is_static(url: str) -> bool:
    """Whether ``url`` names a static file (a path, an object, a ``.json`` URL) rather than an API landing page."""
    return not is_url(url) or protocol(url) not in ("http", "https") or url.split("?")[0].endswith(".json")


def _searched_items(spec: StacSpec) -> Iterator[dict[str, Any]]:
    """The Items a STAC API's Item Search returns for ``spec``."""
    import pystac_client
    import requests
    from pystac_client.exceptions import APIError

    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(total=2, read=0, backoff_factor=0.5, status_forcelist=(502, 503, 504))  # never past the timeout
    try:
        client = pystac_client.Client.open(str(spec.url), timeout=spec.timeout_s,  # open() resets stac_io's
                                           stac_io=StacApiIO(timeout=spec.timeout_s, max_retries=retry))
        search = client.search(collections=spec.collections, bbox=spec.bbox, datetime=spec.datetime,
                               query=spec.query, ids=spec.ids, max_items=spec.max_items)
        yield from search.items_as_dicts()
    except (requests.exceptions.RequestException, APIError, NotImplementedError, ValueError) as exc:
        unreachable = _unreachable(exc, spec.timeout_s)
        if unreachable:
            raise CatalogError(f"stac: no answer from {spec.url} ({unreachable}); check the URL and that the API "
                               "is up, or raise stac.timeout_s (--stac-timeout-s)") from None
        raise CatalogError(f"stac: {spec.url} cannot be searched: {_reason(exc)}; give a STAC API landing page "
                           "(conforming to Item Search) or a static catalog / ItemCollection .json") from None


def _unreachable(exc: BaseException, timeout_s: float) -> str | None:
    """Why the catalog did not answer ("connection refused", "nothing within 30 s"), when that is what ``exc``
    (or what it was raised from) says; None for any other failure."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.Timeout) or "timed out" in str(seen):
            return f"nothing within {timeout_s:g} s"
        if isinstance(seen, requests.exceptions.ConnectionError):
            return "connection refused, or the host is unknown"
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name."""
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else type(exc).__name__).rstrip(".")


def _static_items(spec: StacSpec, cloud: CloudSettings) -> list[dict[str, Any]]:
    """The Items of a static catalog, collection or ItemCollection file, filtered by ``spec``."""
    if spec.query:
        raise CatalogError(f"stac: query {spec.query} needs a STAC API; {spec.url} is a static file: drop query, "
                           "or search an API")
    url = str(spec.url)
    document = _json_document(url, spec.timeout_s, cloud)
    kind = document.get("type")
    if kind == "FeatureCollection":
        items = [_absolute(item, url) for item in document.get("features", [])]
    elif kind in ("Catalog", "Collection"):
        items = _linked_items(url, document, spec.timeout_s, cloud)
    else:
        raise CatalogError(f"stac: {url} is a {kind!r} document, expected one of {', '.join(STATIC_TYPES)} "
                           "(or give a STAC API's landing page)")
    chosen = [item for item in items if _matches(item, spec)]
    return chosen[:spec.max_items] if spec.max_items else chosen


def _linked_items(url: str, document: dict[str, Any], timeout_s: float, cloud: CloudSettings,
                  depth: int = 0) -> list[dict[str, Any]]:
    """The Items a static catalog or collection links to (``item`` links, and its children's, recursively)."""
    if depth > 8:
        raise CatalogError(f"stac: {url}: catalogs nested more than 8 deep; is a child link circular?")
    items = []
    for link in document.get("links", []):
        if link.get("rel") not in ("item", "child"):
            continue
        href = _resolved(link["href"], url)
        linked = _json_document(href, timeout_s, cloud)
        items += [_absolute(linked, href, own_file=True)] if link["rel"] == "item" else _linked_items(
            href, linked, timeout_s, cloud, depth + 1)
    return items


def _json_document(url: str, timeout_s: float, cloud: CloudSettings) -> dict[str, Any]:
    """The JSON document at ``url`` (a path, an object-storage URL or an HTTP URL)."""
    try:
        text = _text_of(url, timeout_s, cloud)
    except OSError as exc:
        raise CatalogError(f"stac: cannot read {url}: {_reason(exc)}; check the path or URL") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"stac: {url} is not JSON ({exc.msg} at line {exc.lineno}); give a STAC catalog, "
                           "collection or ItemCollection file") from None
    if not isinstance(document, dict):
        raise CatalogError(f"stac: {url} holds a JSON {type(document).__name__}, not a STAC object")
    return document


def _text_of(url: str, timeout_s: float, cloud: CloudSettings) -> str:
    """The text at ``url``: a local file, an object, or an HTTP resource fetched within ``timeout_s``."""
    if not is_url(url):
        return Path(url).read_text()
    if protocol(url) in ("http", "https"):
        import requests

        try:
            response = requests.get(url, timeout=timeout_s)
        except requests.exceptions.RequestException as exc:
            raise OSError(f"no answer: {_unreachable(exc, timeout_s) or _reason(exc)}") from None
        if response.status_code != 200:
            raise OSError(f"HTTP {response.status_code}")
        return response.text
    from geoseg_batch.io.remote import read_text

    return read_text(url, cloud)


def _resolved(href: str, base: str) -> str:
    """``href`` made absolute against the document at ``base`` (a path or a URL of any scheme: s3:// too)."""
    if "://" in href or href.startswith("/"):
        return href
    joined = sibling(base, href)
    return str(joined) if is_url(joined) else str(Path(joined).resolve())


def _absolute(item: dict[str, Any], base: str, own_file: bool = False) -> dict[str, Any]:
    """``item`` with its asset hrefs absolute (relative to the document it was read from, ``base``); with
    ``own_file`` (``base`` is the Item's own file), a self link to it when it has none."""
    if not isinstance(item, dict):
        return item
    assets = {key: {**asset, "href": _resolved(str(asset.get("href", "")), base)}
              for key, asset in (item.get("assets") or {}).items() if isinstance(asset, dict)}
    links = [link for link in item.get("links") or [] if isinstance(link, dict)]
    if own_file and not any(link.get("rel") == "self" for link in links):
        links.append({"rel": "self", "href": base})
    return {**item, "assets": assets or item.get("assets"), "links": links}


def checked_item(item: Any, catalog: str) -> dict[str, Any]:
    """``item`` when it is a STAC Item pystac can read (id, geometry, datetime, assets); else CatalogError naming
    it and what is wrong."""
    import pystac

    name = item.get("id", "?") if isinstance(item, dict) else "?"
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict) or not item["assets"]:
        raise CatalogError(f"stac: Item {name!r} of {catalog} is malformed (no assets); fix the Item in the "
                           "catalog, or leave it out with stac.ids")
    try:
        pystac.Item.from_dict(item, preserve_dict=True)
    except (KeyError, TypeError, ValueError, AttributeError, pystac.errors.STACError) as exc:
        raise CatalogError(f"stac: Item {name!r} of {catalog} is malformed ({type(exc).__name__}: "
                           f"{_reason(exc)}); fix the Item in the catalog, or leave it out with stac.ids") from None
    return item


def _matches(item: dict[str, Any], spec: StacSpec) -> bool:
    """Whether a static catalog's ``item`` passes ``spec``'s collections, ids, bbox and datetime."""
    if spec.collections and item.get("collection") not in spec.collections:
        return False
    if spec.ids and item.get("id") not in spec.ids:
        return False
    if spec.bbox and item.get("bbox") and not _overlap(item["bbox"], spec.bbox):
        return False
    return spec.datetime is None or _within(item.get("properties") or {}, spec.datetime)


def _overlap(a: list[float], b: tuple[float, float, float, float]) -> bool:
    """Whether two (west, south, east, north) boxes intersect (boxes with 3D coordinates: their 2D part)."""
    a2 = (a[0], a[1], a[3], a[4]) if len(a) == 6 else tuple(a)
    return a2[0] <= b[2] and b[0] <= a2[2] and a2[1] <= b[3] and b[1] <= a2[3]


def _within(properties: dict[str, Any], interval: str) -> bool:
    """Whether an Item's datetime (or start/end range) meets ``interval`` ("A/B", either end ".." or empty)."""
    start, _, end = interval.partition("/") if "/" in interval else (interval, "", interval)
    low, high = _instant(start, end_of_day=False), _instant(end, end_of_day=True)
    first = _instant(properties.get("start_datetime") or properties.get("datetime"), end_of_day=False)
    last = _instant(properties.get("end_datetime") or properties.get("datetime"), end_of_day=True)
    if first is None or last is None:
        return False
    return (low is None or last >= low) and (high is None or first <= high)


def _instant(text: str | None, end_of_day: bool) -> dt.datetime | None:
    """``text`` (RFC 3339, or a date) as an aware datetime; None for an open end (None, "" or "..")."""
    if text in (None, "", ".."):
        return None
    value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if len(str(text)) == 10 and end_of_day:
        value = value + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
