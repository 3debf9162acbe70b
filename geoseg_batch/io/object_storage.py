"""Results in object storage (S3-compatible): every version under its own prefix, published by a pointer object.

Object stores have no rename, so nothing is built aside and moved into place. The layout of
an output ``OUT`` (``s3://bucket/prefix``) is::

    OUT/current.json        the pointer: which version is current (see :func:`read_pointer`)
    OUT/versions/ID/        one complete version per published run; the 3 newest are kept
    OUT/versions/ID/.done/  tile completion records while ID is being written (removed when published)
    OUT/manifest.json       a copy of the current version's manifest, written just after the pointer
    OUT/.lease.json         the lease of the run writing OUT (:class:`ObjectRecord`)

A run writes its results in place under its own version prefix (ID: the UTC time it began
and the run key, so a re-run of the same job finds it again and resumes from its completion
records), and publishes it by writing the pointer, last: one PUT, which a reader sees whole
or not at all. A reader follows the pointer (:func:`current_version`) and so sees a complete
version, the old one or the new one, at any moment; the versions a reader may still be reading
(the 3 newest) stay. ``OUT/manifest.json`` is where every output keeps its manifest (the
manifest's paths name the version's objects); the pointer is what publishes, the copy follows
it, so a run that dies between the two leaves the previous manifest there, complete. The lease is an object taken with a conditional put (``If-None-Match: *``)
and renewed and released with ``If-Match`` on the ETag its holder wrote; a store that ignores
conditional headers still loses no update unseen: the holder re-reads the record before each
renewal and stops at once when another run's token is there.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from geoseg_batch.errors import OutputExistsError
from geoseg_batch.io.lease import Lease, acquire_lease
from geoseg_batch.io.publish import MANIFEST_NAME, VERSIONS_KEPT
from geoseg_batch.io.remote import CloudSettings, store_errors
from geoseg_batch.io.urls import ObjectPath

POINTER_NAME = "current.json"
"""The pointer object of an output prefix, naming its current version."""
VERSIONS_DIR = "versions"
"""The folder of an output prefix that holds its versions."""
LEASE_NAME = ".lease.json"
"""The lease object of an output prefix."""
OWN_NAMES = frozenset({POINTER_NAME, VERSIONS_DIR, LEASE_NAME})
"""The entries publishing makes in an output prefix (anything else there is somebody else's)."""


def read_pointer(fs: Any, out: ObjectPath) -> dict[str, Any] | None:
    """The pointer of ``out``: ``{"version": ID, "url": "s3://.../versions/ID", "published": "...Z",
    "history": [newest ID first]}``; None when nothing was published there."""
    try:
        payload = json.loads(fs.cat_file((out / POINTER_NAME).key))
    except FileNotFoundError:
        return None
    return payload if isinstance(payload, dict) and "url" in payload else None


def current_version(out: ObjectPath, cloud: CloudSettings | None = None) -> ObjectPath | None:
    """The prefix of the version ``out``'s pointer names (what a reader of ``out`` reads); None when none."""
    cloud = cloud or CloudSettings.of()
    with store_errors(str(out), cloud):
        pointer = read_pointer(cloud.filesystem(out.scheme), out)
    return None if pointer is None else ObjectPath(pointer["url"])


def new_version_id(key: str | None) -> str:
    """A version's ID: the UTC time now (sortable, to the nanosecond) and ``key`` (or a random token)."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
    return f"{stamp}.{now % 10**9:09d}-{key or secrets.token_hex(6)}"


class ObjectStorage:
    """:class:`~geoseg_batch.io.storage.Storage` in object storage: PUTs (atomic per object), server-side copies,
    versions behind a pointer object, and a lease object. Paths are :class:`~geoseg_batch.io.urls.ObjectPath`."""

    in_place = True

    def __init__(self, cloud: CloudSettings | None = None) -> None:
        self.cloud = cloud or CloudSettings.of()

    def fs(self, path: ObjectPath) -> Any:
        """The fsspec filesystem of ``path``'s protocol."""
        return self.cloud.filesystem(path.scheme)

    def exists(self, path: ObjectPath) -> bool:
        """Whether ``path`` is an object or a prefix holding objects (asked of the store, not of a cached listing:
        workers elsewhere write)."""
        fs = self.fs(path)
        with store_errors(str(path), self.cloud):
            fs.invalidate_cache(path.key)
            return bool(fs.exists(path.key))

    def read_text(self, path: ObjectPath) -> str:
        """The text of the object at ``path``."""
        return self.read_bytes(path).decode()

    def read_bytes(self, path: ObjectPath) -> bytes:
        """The content of the object at ``path``."""
        with store_errors(str(path), self.cloud):
            return bytes(self.fs(path).cat_file(path.key))

    def write_text(self, path: ObjectPath, text: str) -> ObjectPath:
        """Write ``text`` as the object ``path`` (one PUT: readers see the old object or the new one)."""
        return self.write_bytes(path, text.encode())

    def write_bytes(self, path: ObjectPath, data: bytes) -> ObjectPath:
        """Write ``data`` as the object ``path`` (one PUT)."""
        with store_errors(str(path), self.cloud):
            self.fs(path).pipe_file(path.key, data)
        return path

    def list(self, path: ObjectPath) -> list[ObjectPath]:
        """The objects and prefixes directly under ``path``, sorted; empty when there are none."""
        fs = self.fs(path)
        with store_errors(str(path), self.cloud):
            try:
                names = fs.ls(path.key, detail=False, refresh=True)
            except FileNotFoundError:
                return []
        return sorted(ObjectPath(f"{path.scheme}://{name}") for name in names if name.rstrip("/") != path.key)

    def remove(self, path: ObjectPath) -> None:
        """Remove the object, or every object under the prefix, ``path`` (nothing when absent)."""
        fs = self.fs(path)
        with store_errors(str(path), self.cloud), contextlib.suppress(FileNotFoundError):
            fs.rm(path.key, recursive=True)

    def link(self, source: ObjectPath, destination: ObjectPath) -> None:
        """Copy the object or prefix ``source`` to ``destination`` inside the store (server-side copies)."""
        fs = self.fs(source)
        with store_errors(str(source), self.cloud):
            if fs.isdir(source.key):
                fs.copy(source.key + "/", destination.key, recursive=True)
            else:
                fs.copy(source.key, destination.key)

    def put(self, local: Path, destination: ObjectPath) -> None:
        """Upload the local file or tree ``local`` as ``destination`` (multipart for large files)."""
        fs = self.fs(destination)
        with store_errors(str(destination), self.cloud):
            if Path(local).is_dir():
                fs.put(f"{local}/", destination.key, recursive=True)
            else:
                fs.put_file(str(local), destination.key)

    def current(self, out: ObjectPath) -> ObjectPath | None:
        """The version ``out``'s pointer names (:func:`current_version`)."""
        return current_version(out, self.cloud)

    def holds_results(self, out: ObjectPath) -> bool:
        """Whether ``out`` holds published results, or objects of somebody else's (not free for a new run)."""
        return any(entry.name not in OWN_NAMES or entry.name == POINTER_NAME for entry in self.list(out))

    def require_free(self, out: ObjectPath, overwrite: bool) -> None:
        """Raise OutputExistsError unless ``out`` may be written: nothing there, or ``overwrite`` given."""
        if not overwrite and self.holds_results(out):
            raise OutputExistsError(f"{out}: already holds results; choose another --out or pass --overwrite "
                                    "(the previous versions stay readable until they are pruned)")

    def staged(self, out: ObjectPath, overwrite: bool, resume_key: str | None
               ) -> AbstractContextManager[ObjectPath]:
        """A new version of ``out``, published through the pointer when the block succeeds (refused while
        ``out`` holds results, unless ``overwrite``)."""
        return _only_stage(self.versioned(out, resume_key, VERSIONS_KEPT, overwrite, fresh=True))

    def versioned(self, out: ObjectPath, resume_key: str | None, keep: int, overwrite: bool, fresh: bool = False
                  ) -> AbstractContextManager[tuple[ObjectPath, ObjectPath | None]]:
        """(the new version's prefix, the current version or None); on success the pointer is set to the new
        version and versions beyond the ``keep`` newest are removed (``fresh``: refuse an ``out`` holding
        results unless ``overwrite``, and offer no previous version)."""
        return _version(self, out, resume_key, keep, overwrite, fresh)

    def acquire_lease(self, out: ObjectPath, wait: bool, wait_timeout_s: float) -> Lease:
        """The lease object ``OUT/.lease.json``, taken with a conditional put and renewed while the run lives."""
        record = ObjectRecord(self.fs(out), out / LEASE_NAME)
        with store_errors(str(out), self.cloud):
            return acquire_lease(out, wait=wait, wait_timeout_s=wait_timeout_s, record=record)  # type: ignore[arg-type]

    def local_copy(self, destination: ObjectPath) -> AbstractContextManager[Path]:
        """A local temporary path to write ``destination`` at; uploaded when the block succeeds."""
        return _uploaded(self, destination)


@contextlib.contextmanager
def _only_stage(versioned: AbstractContextManager[tuple[ObjectPath, ObjectPath | None]]) -> Iterator[ObjectPath]:
    """The stage of a :meth:`ObjectStorage.versioned` context, without the previous version."""
    with versioned as (stage, _):
        yield stage


@contextlib.contextmanager
def _uploaded(storage: ObjectStorage, destination: ObjectPath) -> Iterator[Path]:
    """A path in a fresh local temporary folder, uploaded to ``destination`` when the block succeeds."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="geoseg-upload-") as folder:
        local = Path(folder) / destination.name
        yield local
        if local.exists():
            storage.put(local, destination)


@contextlib.contextmanager
def _version(storage: ObjectStorage, out: ObjectPath, key: str | None, keep: int, overwrite: bool,
             fresh: bool) -> Iterator[tuple[ObjectPath, ObjectPath | None]]:
    """The body of :meth:`ObjectStorage.versioned`."""
    fs = storage.fs(out)
    with store_errors(str(out), storage.cloud):
        pointer = read_pointer(fs, out)
    if fresh:
        storage.require_free(out, overwrite)
    previous = None if pointer is None or fresh else ObjectPath(pointer["url"])
    stage = _resumable(storage, out, key, pointer) or out / VERSIONS_DIR / new_version_id(key)
    published = False
    try:
        yield stage, previous
        for hidden in [p for p in storage.list(stage) if p.name.startswith(".")]:
            storage.remove(hidden)  # completion records: not results
        _publish(storage, out, stage, pointer, keep)
        published = True
    finally:
        if not published and (key is None or not _has_records(storage, stage)):
            storage.remove(stage)


def _resumable(storage: ObjectStorage, out: ObjectPath, key: str | None,
               pointer: dict[str, Any] | None) -> ObjectPath | None:
    """The unpublished version of run ``key`` that a failed run left with completion records, if any."""
    if key is None:
        return None
    published = set(pointer.get("history", [])) if pointer else set()
    found = [v for v in storage.list(out / VERSIONS_DIR)
             if v.name.endswith(f"-{key}") and v.name not in published and _has_records(storage, v)]
    return max(found) if found else None


def _has_records(storage: ObjectStorage, stage: ObjectPath) -> bool:
    """Whether a version being written holds completion records (worth resuming from)."""
    return bool(storage.list(stage / ".done"))


def _publish(storage: ObjectStorage, out: ObjectPath, version: ObjectPath, pointer: dict[str, Any] | None,
             keep: int) -> None:
    """Point ``out`` at ``version`` (one PUT of the pointer), copy its manifest to ``OUT/manifest.json``, then
    remove published versions beyond ``keep``."""
    history = [version.name, *[v for v in (pointer or {}).get("history", []) if v != version.name]]
    published = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    storage.write_text(out / POINTER_NAME, json.dumps({"version": version.name, "url": str(version),
                                                       "published": published, "history": history[:keep]},
                                                      indent=2) + "\n")
    if storage.exists(version / MANIFEST_NAME):  # OUT/manifest.json, where every output keeps its manifest
        storage.write_bytes(out / MANIFEST_NAME, storage.read_bytes(version / MANIFEST_NAME))
    for old in history[keep:]:
        storage.remove(out / VERSIONS_DIR / old)


class ObjectRecord:
    """A lease recorded in an object: created with ``If-None-Match: *``, renewed and removed with ``If-Match``
    on the ETag this holder wrote (plain writes where a store refuses conditional headers)."""

    def __init__(self, fs: Any, path: ObjectPath) -> None:
        self.fs, self.path, self.name = fs, path, str(path)
        self._etag: str | None = None

    def create(self, text: str) -> bool:
        """PUT the record unless an object is there (``If-None-Match: *``)."""
        return self._put(text, mode="create")

    def read(self) -> str | None:
        """The record's text; None when there is none."""
        try:
            return bytes(self.fs.cat_file(self.path.key)).decode()
        except FileNotFoundError:
            return None

    def replace(self, text: str) -> bool:
        """PUT ``text`` over the record if it is still the one this holder wrote (``If-Match``)."""
        return self._put(text, **({"IfMatch": self._etag} if self._etag else {}))

    def _put(self, text: str, **conditions: str) -> bool:
        """PUT ``text`` under ``conditions``; whether the store took it (False: a condition failed)."""
        try:
            answer = self.fs.pipe_file(self.path.key, text.encode(), **conditions)
        except Exception as error:
            if _precondition_failed(error):
                return False
            raise
        self._etag = (answer or {}).get("ETag")
        return True

    def take_over(self, seen: str) -> bool:
        """Delete the record if it still holds ``seen`` (``If-Match`` on the ETag it had when read)."""
        try:
            etag = self.fs.info(self.path.key, refresh=True)["ETag"]
            if self.read() != seen:
                return False
            self._delete(etag)
        except FileNotFoundError:
            return False
        except Exception as error:
            if _precondition_failed(error):
                return False
            raise
        return True

    def remove(self) -> None:
        """Delete the record (``If-Match`` on this holder's ETag)."""
        with contextlib.suppress(FileNotFoundError):
            try:
                self._delete(self._etag)
            except Exception as error:
                if not _precondition_failed(error):
                    raise

    def written_at(self) -> float:
        """The record's LastModified time; 0 when there is none."""
        try:
            return float(self.fs.info(self.path.key, refresh=True)["LastModified"].timestamp())
        except FileNotFoundError:
            return 0.0

    def _delete(self, etag: str | None) -> None:
        """DeleteObject, conditional on ``etag`` where given."""
        bucket, key = self.path.key.split("/", 1)
        self.fs.call_s3("delete_object", Bucket=bucket, Key=key, **({"IfMatch": etag} if etag else {}))
        self.fs.invalidate_cache(self.path.key)


def _precondition_failed(error: BaseException) -> bool:
    """Whether ``error`` is the store refusing a conditional write (HTTP 412)."""
    return isinstance(error, FileExistsError) or "pre-condition" in str(error) or "PreconditionFailed" in str(error)
