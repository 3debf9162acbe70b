"""Posting Items to a STAC API with the Transactions extension (OGC API Features Part 4 / STAC API
Transactions): the collection created when missing (``POST /collections``), each Item created
(``POST /collections/{id}/items``) or, where one with its id exists (409 Conflict), replaced
(``PUT /collections/{id}/items/{item_id}``). Every request is bounded by a timeout; a failure is one
line (:class:`~geoseg_batch.errors.StacApiError`) naming the request, what came back and what to do.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from geoseg_batch.errors import StacApiError

TIMEOUT_S = 30.0
"""The bound on one request to the API (connecting and each read)."""
GEOJSON = "application/geo+json"
NOT_PUBLISHED = "the results were not published: a re-run resumes"


@dataclass(frozen=True)
class Posted:
    """What posting did: the API, the collection (and whether it was created), Items created and replaced."""

    api: str
    collection: str
    collection_created: bool
    created: int
    updated: int

    def record(self) -> dict[str, Any]:
        """The manifest summary's record of it."""
        return {"url": self.api, "collection": self.collection, "collection_created": self.collection_created,
                "items_created": self.created, "items_updated": self.updated}


def post_items(api: str, collection: dict[str, Any], items: Sequence[dict[str, Any]],
               timeout_s: float = TIMEOUT_S) -> Posted:
    """Post ``items`` (Item JSON, their ``collection`` field ``collection["id"]``) to the STAC API at ``api``,
    creating ``collection`` there first if it is missing; what was done. Raises StacApiError."""
    base = api.rstrip("/")
    collection_id = urllib.parse.quote(collection["id"], safe="")
    status, _ = _request("GET", f"{base}/collections/{collection_id}", None, timeout_s, ok=(200, 404))
    created_collection = status == 404
    if created_collection:
        _request("POST", f"{base}/collections", collection, timeout_s, ok=(200, 201, 202))
    created = updated = 0
    for item in items:
        url = f"{base}/collections/{collection_id}/items"
        status, _ = _request("POST", url, item, timeout_s, ok=(200, 201, 202, 409))
        if status == 409:  # an Item with this id exists: replace it
            _request("PUT", f"{url}/{urllib.parse.quote(item['id'], safe='')}", item, timeout_s,
                     ok=(200, 201, 202, 204))
            updated += 1
        else:
            created += 1
    return Posted(api, collection["id"], created_collection, created, updated)


def _request(method: str, url: str, body: dict[str, Any] | None, timeout_s: float,
             ok: tuple[int, ...]) -> tuple[int, bytes]:
    """(status, body) of one request; StacApiError for a status not in ``ok``, a timeout or no connection."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Accept": "application/json", "Content-Type": GEOJSON
                                              if body is not None and body.get("type") == "Feature"
                                              else "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, refused connections
        reason = getattr(error, "reason", error)
        raise StacApiError(f"stac_api: {method} {url} failed ({reason}; a request waits at most {timeout_s:g} s); "
                           "expected a STAC API with the Transactions extension there: check stac_api (--stac-api) "
                           f"and that the server is up ({NOT_PUBLISHED})") from None
    if status not in ok:
        raise StacApiError(f"stac_api: {method} {url} answered {status}{_detail(payload)}; expected "
                           f"{'/'.join(map(str, ok))}{_hint(status)} ({NOT_PUBLISHED})")
    return status, payload


def _detail(payload: bytes) -> str:
    """The first 200 characters of a response's body, on one line, in parentheses (nothing for an empty one)."""
    text = " ".join(payload.decode(errors="replace").split())[:200]
    return f" ({text})" if text else ""


def _hint(status: int) -> str:
    """What to do about an unexpected status."""
    if status in (404, 405, 501):
        return ("; the API does not accept transactions there: give a STAC API with the Transactions extension "
                "(POST /collections, POST and PUT /collections/{id}/items), or drop stac_api")
    if status in (401, 403):
        return "; the API refused the credentials: give a STAC API that accepts this machine's requests"
    if status in (400, 422):
        return "; the API refused the document: its answer above says which field"
    return "; retry when the API is healthy"
