"""Replacing a published output with a new one, with no moment at which there is no complete output.

:func:`replace_tree` puts a new directory (or link) where the output is. On Linux the two
are swapped in one step, ``renameat2(RENAME_EXCHANGE)`` (called through ctypes), and the old
one, now under a hidden name, is deleted afterwards. Where the exchange is unavailable (not
Linux, an old kernel or C library, a filesystem without it) the old output is renamed aside
and the new one renamed into place: between these two renames (microseconds) the output's
name is absent, and a crash there leaves the old output aside, which the next publication
into the same place puts back (:func:`recover_leftovers`) before doing anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import secrets
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

RENAME_EXCHANGE = 2
"""renameat2's flag: atomically exchange two existing paths (linux/fs.h)."""
AT_FDCWD = -100
"""*at() system calls: paths relative to the current directory."""


@functools.cache
def _renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's renameat2 (2.28 and later), or None where the C library has none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step; whether it was done (False: no exchange here, nothing changed)."""
    function = _renameat2()
    if function is None:
        return False
    if function(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the kernel or the filesystem cannot exchange
    raise OSError(code, os.strerror(code), str(second))


def leftover_name(out: Path, kind: str) -> Path:
    """A fresh hidden name beside ``out`` for an old output on its way out (``kind``: 'old' or 'swap')."""
    return out.parent / f".{out.name}.{kind}-{secrets.token_hex(4)}"


def replace_tree(new: Path, out: Path) -> None:
    """Make ``new`` (a directory or link) be at ``out``, replacing what is there with no moment without one
    (see the module docstring); the replaced output is deleted."""
    if not os.path.lexists(out):
        os.replace(new, out)
        return
    swap = leftover_name(out, "swap")
    os.rename(new, swap)  # a name nobody reads: a crash from here on leaves `out` as it was, or the new one
    if exchange(swap, out):
        _delete(swap)  # the old output, under the hidden name now
        return
    aside = leftover_name(out, "old")
    os.rename(out, aside)
    os.rename(swap, out)  # the window of the fallback: between these two renames `out` is absent
    _delete(aside)


def recover_leftovers(out: Path) -> None:
    """Undo what a crash in :func:`replace_tree` left: an old output aside while ``out`` is absent is put
    back; other old outputs (and new ones a crash kept from being swapped in) are deleted."""
    out = Path(out)
    old = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.lstat().st_mtime)
    if old and not os.path.lexists(out):
        log.warning("%s: restoring the previous output, left aside by a run that crashed while publishing", out)
        os.rename(old.pop(), out)
    for leftover in [*old, *out.parent.glob(f".{out.name}.swap-*")]:
        _delete(leftover)


def _delete(path: Path) -> None:
    """Remove the tree, file or link at ``path`` (nothing when absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
