"""Where results are stored, behind one small interface: :class:`Storage`.

Publishing (:mod:`geoseg_batch.io.publication`) reads and writes through a ``Storage``
and never calls the filesystem itself, so a second kind of storage (S3-compatible
object storage) can be added beside :class:`LocalStorage` without touching the job
runners. A storage offers what publishing needs: read, write atomically, list, remove,
copy unchanged results from the previous version, the two ways of making a new
result appear in one step (a staged directory renamed into place, or a new version
behind a pointer), and the lease that keeps a second run out of an output while one
writes there (:mod:`geoseg_batch.io.lease`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from geoseg_batch.io.lease import Lease, acquire_lease
from geoseg_batch.io.publish import atomic_path, link_tree, staged_directory, versioned_directory


@runtime_checkable
class Storage(Protocol):
    """The file operations publishing needs; paths are :class:`~pathlib.Path` (keys, for object storage)."""

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

    def rename(self, source: Path, destination: Path) -> None:
        """Move ``source`` onto ``destination`` in one step."""

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

    def rename(self, source: Path, destination: Path) -> None:
        """``os.replace``: atomic on one filesystem."""
        os.replace(source, destination)

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
