"""Typed errors: each subclass is also the matching built-in exception.

The CLI turns a :class:`GeosegError` into one line on stderr and its ``exit_code``:
2 for bad input or usage (the user can fix it), 1 for a failure during the run.
Messages say what was received, what was expected and how to fix it, and name the
file or YAML key involved.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Base of every error geoseg_batch raises on purpose."""

    exit_code = 1


class InputError(GeosegError, ValueError):
    """Bad input the user can fix: data, arguments, job files. Exit code 2."""

    exit_code = 2


class DataError(InputError):
    """A data file (HDF5 chip, shard, raster) is malformed or inconsistent."""


class ConfigError(InputError):
    """A job file or option value is invalid."""


class BundleError(InputError):
    """A file given as a model bundle is not one, or is incompatible."""


class MissingInputError(GeosegError, FileNotFoundError):
    """An input path does not exist. Exit code 2. (Raised with one argument, the message.)"""

    exit_code = 2


class OutputExistsError(GeosegError, FileExistsError):
    """An output path exists and overwriting was not asked for. Exit code 2."""

    exit_code = 2


class RunError(GeosegError, RuntimeError):
    """A failure during the run (not the user's input). Exit code 1."""


class OutputLockedError(GeosegError, RuntimeError):
    """Another run holds the lock on the output location (see :mod:`geoseg_batch.io.lease`). Exit code 2:
    wait for it, or pass ``--wait``."""

    exit_code = 2


class OutputLocationError(GeosegError, OSError):
    """The output location cannot be written: read-only, a file where a directory belongs, no permission.
    Exit code 2: the user can fix it (see :mod:`geoseg_batch.io.oserrors`). Raised with one argument, the message."""

    exit_code = 2


class NoSpaceError(GeosegError, OSError):
    """The device filled up (or a file size limit was reached) during the run. Exit code 1: a re-run of the same
    command after freeing space resumes. Raised with one argument, the message."""

    exit_code = 1


class CatalogError(InputError):
    """A STAC catalog cannot be searched or read, or one of its Items is malformed or lacks what the model needs.
    Exit code 2."""


class StacApiError(GeosegError, RuntimeError):
    """A STAC API the results were to be posted to (``stac_api``) refused them or could not be reached. Exit
    code 2: the user can fix the URL or the server (see :mod:`geoseg_batch.stac.transactions`)."""

    exit_code = 2
