"""The predictions a mosaic reads: predict outputs (directories, or prefixes in object storage) and zarr stores,
each scene's store found and given a content key.

A predict output is read where its readers read it: a local directory as it is (for an
incremental output, the link to its current version), a prefix in object storage by
following its pointer (``current.json``) to the version that holds ``manifest.json``,
``state.json`` and the stores. A bare ``.zarr`` store is keyed by its files' names, sizes
and times (locally) or its objects' ETags and sizes (in object storage: nothing is downloaded).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg_batch.errors import ConfigError, MissingInputError
from geoseg_batch.io.publish import MANIFEST_NAME, combined_digest
from geoseg_batch.io.state import STATE_NAME, RunState
from geoseg_batch.io.storage import storage_for
from geoseg_batch.io.urls import Location, ObjectPath, Output, is_url, name, output_location

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings


def prediction_stores(predictions: Sequence[Location], cloud: CloudSettings | None = None
                      ) -> dict[str, tuple[Location, str]]:
    """{scene stem: (zarr store, content key)} of predict outputs (or stores), in order; URLs read with ``cloud``.

    The key is what the predict run recorded the scene's outputs were made from; a store
    without that record gets one from its files (:func:`files_key`).
    """
    stores: dict[str, tuple[Location, str]] = {}
    for given in predictions:
        where = output_location(given)
        if where.name.endswith(".zarr"):
            stores[Path(where.name).stem] = (_location(where), files_key(_location(where), cloud))
            continue
        for stem, store, key in _listed_stores(where, cloud):
            if stem in stores:
                raise ConfigError(f"{where}: scene {stem!r} is also in another prediction directory; "
                                  "mosaic each scene once")
            stores[stem] = (store, key)
    return stores


def _listed_stores(out: Output, cloud: CloudSettings | None) -> list[tuple[str, Location, str]]:
    """(stem, store, content key) of each scene the predict output ``out`` lists (in its current version)."""
    storage = storage_for(out, cloud)
    version: Any = storage.current(out) or out
    if not storage.exists(version / MANIFEST_NAME):
        raise MissingInputError(f"{out}: not a predict output (no manifest.json); give predict --out "
                                "directories (or s3:// prefixes) or .zarr stores")
    state_path = version / STATE_NAME
    state = RunState.loads(storage.read_text(state_path)) if storage.exists(state_path) else RunState()
    listed = []
    for entry in json.loads(storage.read_text(version / MANIFEST_NAME))["outputs"]:
        store = _location(version / name(entry["zarr"]))
        stem = Path(name(entry["zarr"])).stem
        listed.append((stem, store, state.key_of(stem) or files_key(store, cloud)))
    return listed


def _location(where: Output) -> Location:
    """An output location as a store location: the URL string of an object-storage prefix, else the path."""
    return str(where) if isinstance(where, ObjectPath) else where


def files_key(path: Location, cloud: CloudSettings | None = None) -> str:
    """A content key of the tree at ``path`` from its files' names, sizes and modification times; in object
    storage from its objects' names, sizes and ETags (listed, not read)."""
    if is_url(str(path)):
        return combined_digest({"files": json.dumps(_object_stats(str(path), cloud))})
    root = Path(path)
    stats = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
    return combined_digest({"files": json.dumps(stats)})


def _object_stats(url: str, cloud: CloudSettings | None) -> list[tuple[str, int, str]]:
    """(name under ``url``, size, ETag or else LastModified) of every object under the prefix ``url``, sorted."""
    from geoseg_batch.io.remote import CloudSettings, store_errors

    settings = cloud or CloudSettings.of()
    prefix = ObjectPath(url)
    with store_errors(url, settings):
        found = settings.filesystem(prefix.scheme).find(prefix.key, detail=True)
    return sorted((key[len(prefix.key):].lstrip("/"), int(info.get("size") or 0),
                   str(info.get("ETag") or info.get("LastModified") or "")) for key, info in found.items())
