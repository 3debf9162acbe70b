"""Where a worker gets the model bundle's file from: its path, its object in object storage, or bytes sent along.

Keras loads a bundle from a local file, and a worker may not see the client's disk. So:

- a bundle in object storage (``--model s3://bucket/m.keras``) is fetched by each worker, once,
  into its own local directory (Dask's scratch space: ``--local-directory``, else ``TMPDIR``), with
  the job's :class:`~geoseg_batch.io.remote.CloudSettings` (plain data) and the worker's own
  credentials (its environment, profile or instance role), after checking that the object is
  still the one the run was keyed with (ETag and size);
- a local bundle on a cluster this process started is opened by its path (the same disk);
- a local bundle on the workers of an existing scheduler (``--scheduler``), which may run on
  machines without this disk, travels with the model plugin as bytes, up to
  :data:`CARRIED_LIMIT_BYTES` (a base-16 depth-4 U-Net of 14 bands is 7.7 MiB; the scheduler
  keeps a registered plugin, bytes included, for as long as it runs). A larger one is looked for
  at its path on each worker, and a worker without it fails the run at once, naming the fix:
  object storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg_batch.errors import BundleError, MissingInputError
from geoseg_batch.io.urls import Location, is_url, name

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

CARRIED_LIMIT_BYTES = 64 * 2**20
"""The largest local bundle sent to the workers of an existing scheduler with the model plugin."""


@dataclass(frozen=True)
class BundleSource:
    """A bundle as the model plugin carries it to the workers: its location (an absolute path or a URL), its
    checksum, how to reach its store (URLs), and (a local bundle for workers that may not see it) its bytes."""

    location: str
    digest: str
    cloud: CloudSettings | None = None
    payload: bytes | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        """What the workers read the bundle from: "url", "bytes" (sent by the client) or "path"."""
        return "url" if is_url(self.location) else "bytes" if self.payload is not None else "path"

    @contextlib.contextmanager
    def local_file(self, scratch: Path, worker: str = "this worker") -> Iterator[Path]:
        """A local file holding the bundle: its own path, or a copy made in a new directory of ``scratch``
        (removed on exit, once Keras has read it). Raises MissingInputError naming ``worker`` for a path that
        is not on it."""
        if self.payload is None and not is_url(self.location):
            yield self._present(worker)
            return
        target = Path(tempfile.mkdtemp(prefix="geoseg-bundle-", dir=scratch)) / name(self.location)
        try:
            if self.payload is not None:
                target.write_bytes(self.payload)
            else:
                _fetched(self.location, self.digest, self.cloud, target)
            yield target
        finally:
            shutil.rmtree(target.parent, ignore_errors=True)

    def _present(self, worker: str) -> Path:
        """The bundle's path, which must exist where this runs."""
        path = Path(self.location)
        if not path.is_file():
            raise MissingInputError(
                f"{path}: no such model bundle on {worker}; a worker of an existing scheduler may not see the "
                f"client's disk, and a bundle over {CARRIED_LIMIT_BYTES // 2**20} MiB is not sent to it: put the "
                "bundle in object storage (--model s3://bucket/m.keras) or at this path on every worker")
        return path


def bundle_source(bundle: Location, digest: str, cloud: CloudSettings | None, carried: bool) -> BundleSource:
    """How the workers get ``bundle`` (checksum ``digest``): a URL with ``cloud``'s settings; a local path,
    with its bytes when ``carried`` (workers that may not see this disk) and it is at most
    :data:`CARRIED_LIMIT_BYTES`.

    Raises BundleError when the bytes read are not the ones ``digest`` was computed from (the file changed).
    """
    if is_url(bundle):
        from geoseg_batch.io.remote import CloudSettings

        return BundleSource(str(bundle), digest, cloud or CloudSettings.of())
    path = Path(bundle).resolve()
    if not carried or path.stat().st_size > CARRIED_LIMIT_BYTES:
        return BundleSource(str(path), digest)
    payload = path.read_bytes()
    if digest.startswith("sha256:") and hashlib.sha256(payload).hexdigest() != digest.removeprefix("sha256:"):
        raise BundleError(f"{path}: the bundle changed after this run hashed it ({digest}); run the job again")
    return BundleSource(str(path), digest, payload=payload)


def _fetched(url: str, digest: str, cloud: CloudSettings | None, target: Path) -> Path:
    """``target``, holding the object at ``url`` once it is checked to be the one of ``digest``."""
    from geoseg_batch.io.remote import CloudSettings, download, object_checksum

    cloud = cloud or CloudSettings.of()
    if (now := object_checksum(url, cloud)) != digest:
        raise BundleError(f"{url}: the model bundle changed after this run read it (was {digest}, now {now}); "
                          "run the job again")
    return download(url, cloud, target)
