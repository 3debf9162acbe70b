"""Operating-system errors met while writing outputs, as one line that names the path and what to do.

:func:`os_error_line` is the one translation, used where outputs are created, staged and
published (:class:`~geoseg_batch.io.publication.Publication`) and around the runs that gather
worker tasks writing chunks and COGs (a worker's OSError comes back through Dask's gather as
itself): :func:`translated_os_errors`. What the user can fix (a read-only location, a file where a
directory belongs, no permission) is an :class:`~geoseg_batch.errors.OutputLocationError`
(exit 2); a device that fills up during the run is a :class:`~geoseg_batch.errors.NoSpaceError`
(exit 1: free space and re-run, the run resumes). OSErrors of other kinds pass unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from geoseg_batch.errors import GeosegError, NoSpaceError, OutputLocationError

RESUMES = "run the same command again: it resumes from the work already done"
"""What to do after a failure during the run (tiles and chunks done are recorded in the staging directory)."""

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""Errors of a device (or quota, or file size limit) that filled up during the run: exit 1."""

_FIXES = {
    errno.EROFS: "is on a read-only filesystem; choose an --out on a writable one",
    errno.EACCES: "permission denied; give this user access to it or choose another --out",
    errno.EPERM: "operation not permitted; give this user write access there or choose another --out",
    errno.EEXIST: "already exists as a file; remove it or choose another --out",
    errno.EISDIR: "is a directory where a file belongs; remove it or choose another --out",
}


def os_error_line(error: OSError, path: Path | str | None = None, needed_bytes: int | None = None) -> OSError:
    """The one-line error (an OutputLocationError or a NoSpaceError) for ``error`` met while writing ``path``
    (or the path the error names), or ``error`` itself when it is not an error of the output location (no
    known errno) or already one line.

    ``needed_bytes``: how much the write needed, when the caller knows (said in the no-space line)."""
    if isinstance(error, GeosegError):
        return error
    code = error_code(error)
    where = Path(error.filename) if getattr(error, "filename", None) else Path(path or ".")
    if code in NO_SPACE:
        return _no_space(where, code, needed_bytes)
    blocked = _blocked(Path(path)) if path is not None and code in (errno.ENOTDIR, errno.EEXIST) else None
    if blocked or code == errno.ENOTDIR:
        return _located(blocked or f"{where}: a part of the path is not a directory; choose an --out whose "
                        "parents are directories", code)
    if code in _FIXES:
        return _located(f"{where}: {_FIXES[code]}", code)
    return error  # not an error of the location: let it through as it is


def error_code(error: OSError) -> int | None:
    """The errno of ``error``; for errors without one (GDAL's, through rasterio) the errno whose text their
    message contains, e.g. 'No space left on device'."""
    if error.errno:
        return int(error.errno)
    text = str(error)
    for code in (*NO_SPACE, errno.EROFS, errno.EACCES, errno.ENOTDIR):
        if os.strerror(code) in text:
            return code
    return None


@contextlib.contextmanager
def translated_os_errors(path: Path | str) -> Iterator[None]:
    """A block whose OSErrors of the output location ``path`` leave it as one line (:func:`os_error_line`)."""
    try:
        yield
    except OSError as error:
        translated = os_error_line(error, path)
        if translated is error:
            raise
        raise translated from None


def _located(message: str, code: int) -> OutputLocationError:
    """An OutputLocationError carrying ``code`` as its errno."""
    located = OutputLocationError(message)
    located.errno = code
    return located


def _blocked(out: Path) -> str | None:
    """What is wrong with an output path that is a file or lies under one, and the fix; None when neither."""
    if out.is_file():
        return f"{out}: is a file, not a directory; remove it or choose another --out"
    blocking = next((p for p in out.parents if p.is_file()), None)
    if blocking is not None:
        return f"{out}: lies under {blocking}, which is a file; choose an --out whose parents are directories"
    return None


def _no_space(where: Path, code: int, needed_bytes: int | None) -> NoSpaceError:
    """The no-space line: the path, how much was needed (if known) and is free, and that a re-run resumes."""
    if code == errno.EFBIG:
        what = "the file size limit (ulimit -f) was reached"
    else:
        what = "no space left on the device" if code == errno.ENOSPC else "the disk quota is exhausted"
    needed = f"; about {_size(needed_bytes)} more were needed" if needed_bytes else ""
    free = free_bytes(where)
    free_now = f" ({_size(free)} free now)" if free is not None else ""
    error = NoSpaceError(f"{where}: {what}{needed}{free_now}; free space there (or choose another --out) and "
                         f"{RESUMES}")
    error.errno = code
    return error


def free_bytes(path: Path) -> int | None:
    """Bytes free on the filesystem holding ``path`` (its nearest existing parent); None when unknown."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            if candidate.exists():
                return shutil.disk_usage(candidate).free
    return None


def _size(count: int) -> str:
    """A byte count for people: '1.5 GB', '320 MB', '12 kB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"
