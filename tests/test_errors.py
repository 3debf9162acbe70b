"""Typed errors are also the matching built-ins, print their message as given, and survive pickling (Dask)."""

from __future__ import annotations

import pickle

import pytest

from geoseg_batch.cluster import ClusterUnreachableError
from geoseg_batch.errors import (
    BundleError, ConfigError, DataError, GeosegError, InputError, MissingInputError, NoSpaceError, OutputExistsError,
    OutputLocationError, OutputLockedError, RunError,
)


@pytest.mark.parametrize("cls, builtin, code", [
    (DataError, ValueError, 2), (ConfigError, ValueError, 2), (BundleError, ValueError, 2),
    (InputError, ValueError, 2), (MissingInputError, FileNotFoundError, 2), (OutputExistsError, FileExistsError, 2),
    (ClusterUnreachableError, ConnectionError, 2), (RunError, RuntimeError, 1),
    (OutputLockedError, RuntimeError, 2), (OutputLocationError, OSError, 2), (NoSpaceError, OSError, 1),
])
def test_each_error_is_its_builtin(cls, builtin, code):
    error = cls("x.tif: what was wrong; how to fix it")
    assert isinstance(error, GeosegError) and isinstance(error, builtin) and error.exit_code == code
    assert str(error) == "x.tif: what was wrong; how to fix it"
    again = pickle.loads(pickle.dumps(error))  # errors raised in Dask tasks travel back pickled
    assert type(again) is cls and str(again) == str(error)
