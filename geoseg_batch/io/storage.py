"""Where results are stored, behind one small interface: :class:`Storage`.

Publishing (:mod:`geoseg_batch.io.publication`) reads and writes through a ``Storage``
and never calls the filesystem itself. Two kinds: :class:`LocalStorage` (a local or
mounted filesystem: staged directories renamed into place, versions behind a symbolic
link) and :class:`~geoseg_batch.io.object_storage.ObjectStorage` (S3-compatible object
storage: versions under their own prefixes behind a pointer object); :func:`storage_for`
picks the one of an output location. A storage offers what publishing needs: read, write
atomically, list, remove, copy unchanged results from the previous version, upload what
was made in a local file, the two ways of making a new result appear in one step, where
a reader finds the current results, and the lease that keeps a second run out of an
output while one writes there (:mod:`geoseg_batch.io.lease`).
"""

from __future__ import annotations

import contextlib
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from geoseg_batch.io.lease import Lease, acquire_lease
from geoseg_batch.io.publish import atomic_path, link_tree, require_free, staged_directory, versioned_directory

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings
    from geoseg_batch.io.urls import Output


@runtime_checkable
class Storage(Protocol):
    """The file operations publishing needs; paths are :class:`~pathlib.Path` (for object storage,
    :class:`~geoseg_batch.io.urls.ObjectPath`)."""

    in_place: bool
    """Whether a run's stage is where its results are read once published (versions behind a pointer), not
    a place renamed onto ``out``."""

    def exists(self, path: Path) -> bool:
        """Whether ``path`` holds a file or a directory."""

    def read_text(self, path: Path) -> str:
        """The text of the file at ``path``."""

    def read_bytes(self, path: Path) -> bytes:
        """The content of the file at ``path``."""

    def write_text(self, path: Path, text: str) -> Path:
        """Write ``text`` to ``path`` atomically (readers see the old file or the new one); returns ``path``."""

    def write_bytes(self, path: Path, data: bytes) -> Path:
        """Write ``data`` to ``path`` atomically; returns ``path``."""

    def list(self, path: Path) -> list[Path]:
        """The entries directly under ``path``, sorted; empty when it does not exist."""

    def remove(self, path: Path) -> None:
        """Remove the file or tree at ``path`` (nothing when absent)."""

    def link(self, source: Path, destination: Path) -> None:
        """Make ``destination`` a copy of the file or tree ``source``, sharing data where the storage can."""

    def put(self, local: Path, destination: Any) -> None:
        """Move the local file or tree ``local`` (made by this process) to ``destination``."""

    def local_copy(self, destination: Any) -> AbstractContextManager[Path]:
        """A local path to write ``destination`` at (``destination`` itself where it is local)."""

    def current(self, out: Any) -> Any | None:
        """Where a reader of ``out`` finds its current results (``out``, or the version its pointer names);
        None when nothing is published there."""

    def require_free(self, out: Any, overwrite: bool) -> None:
        """Raise OutputExistsError unless ``out`` may be written: empty, or ``overwrite`` given."""

    def staged(self, out: Path, overwrite: bool, resume_key: str | None) -> AbstractContextManager[Path]:
        """A staging place that becomes ``out`` when the block succeeds (see :func:`staged_directory`)."""

    def versioned(self, out: Path, resume_key: str, keep: int, overwrite: bool
                  ) -> AbstractContextManager[tuple[Path, Path | None]]:
        """(staging place, previous version or None); on success the staging place becomes the version
        ``out`` points to (see :func:`versioned_directory`)."""

    def acquire_lease(self, out: Path, wait: bool, wait_timeout_s: float) -> Lease:
        """The lease on output location ``out`` for this run (OutputLockedError while another run holds it;
        with ``wait``, after waiting at most ``wait_timeout_s`` for it)."""


class LocalStorage:
    """:class:`Storage` on the local (or a mounted) filesystem: atomic renames, hard links, symbolic links."""

    in_place = False

    def exists(self, path: Path) -> bool:
        """Whether ``path`` holds a file or a directory."""
        return Path(path).exists()

    def read_text(self, path: Path) -> str:
        """The text of the file at ``path``."""
        return Path(path).read_text()

    def read_bytes(self, path: Path) -> bytes:
        """The content of the file at ``path``."""
        return Path(path).read_bytes()

    def write_text(self, path: Path, text: str) -> Path:
        """Write ``text`` to ``path`` under a temporary name and rename it into place; returns ``path``."""
        return self.write_bytes(path, text.encode())

    def write_bytes(self, path: Path, data: bytes) -> Path:
        """Write ``data`` to ``path`` under a temporary name and rename it into place; returns ``path``."""
        with atomic_path(path, Path(path).suffix) as tmp:
            tmp.write_bytes(data)
        return Path(path)

    def list(self, path: Path) -> list[Path]:
        """The entries directly under ``path``, sorted; empty when it is not a directory."""
        path = Path(path)
        return sorted(path.iterdir()) if path.is_dir() else []

    def remove(self, path: Path) -> None:
        """Remove the file, link or tree at ``path`` (nothing when absent)."""
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def link(self, source: Path, destination: Path) -> None:
        """Hard-link the file or tree ``source`` as ``destination`` (copies across devices)."""
        link_tree(source, destination)

    def put(self, local: Path, destination: Path) -> None:
        """Rename ``local`` onto ``destination`` (copied across filesystems)."""
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(local, destination)

    def local_copy(self, destination: Path) -> AbstractContextManager[Path]:
        """``destination`` itself."""
        return contextlib.nullcontext(Path(destination))

    def current(self, out: Path) -> Path | None:
        """``out`` (a link to the current version, for incremental outputs) when it exists."""
        return Path(out) if Path(out).exists() else None

    def require_free(self, out: Path, overwrite: bool) -> None:
        """:func:`~geoseg_batch.io.publish.require_free`."""
        require_free(Path(out), overwrite)

    def staged(self, out: Path, overwrite: bool, resume_key: str | None) -> AbstractContextManager[Path]:
        """:func:`~geoseg_batch.io.publish.staged_directory`: a hidden sibling renamed to ``out``."""
        return staged_directory(out, overwrite=overwrite, resume_key=resume_key)

    def versioned(self, out: Path, resume_key: str, keep: int, overwrite: bool
                  ) -> AbstractContextManager[tuple[Path, Path | None]]:
        """:func:`~geoseg_batch.io.publish.versioned_directory`: versions behind a swapped symbolic link."""
        return versioned_directory(out, resume_key, keep=keep, overwrite=overwrite)

    def acquire_lease(self, out: Path, wait: bool, wait_timeout_s: float) -> Lease:
        """:func:`~geoseg_batch.io.lease.acquire_lease`: the lock file ``.NAME.lock`` beside ``out``, created
        exclusively and renewed by a heartbeat."""
        return acquire_lease(out, wait=wait, wait_timeout_s=wait_timeout_s)


def storage_for(out: Output, cloud: CloudSettings | None = None) -> Storage:
    """The storage of output location ``out``: :class:`LocalStorage` for a path, object storage (with
    ``cloud``, default the environment's) for an :class:`~geoseg_batch.io.urls.ObjectPath`."""
    from geoseg_batch.io.urls import ObjectPath

    if isinstance(out, ObjectPath):
        from geoseg_batch.io.object_storage import ObjectStorage

        return ObjectStorage(cloud)
    return LocalStorage()
