"""Input checks at the edge of the report functions.

Wrong inputs raise :class:`~geoseg_batch.errors.InputError` (a ``ValueError``) saying what
was received and what was expected.
"""

from __future__ import annotations

import numpy as np

from geoseg_batch.errors import InputError


def as_array(value: object, name: str) -> np.ndarray:
    """``np.asarray(value)``; raises InputError saying what it received when it cannot convert."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected an array, received {type(value).__name__} ({exc})") from exc


def require_ndim(array: np.ndarray, ndim: int, name: str, expected: str) -> None:
    """Return nothing; raise InputError unless ``array`` has ``ndim`` dimensions."""
    if array.ndim != ndim:
        raise InputError(f"{name}: received shape {array.shape}, expected {expected}")


def require_positive_int(value: object, name: str, minimum: int) -> int:
    """``value`` as an int; raises InputError unless it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}: received {value!r}, expected an integer >= {minimum}")
    return int(value)


def class_map(array: np.ndarray, name: str) -> np.ndarray:
    """An integer class map (bool, int, or integer-valued float), validated, as int64."""
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.integer):
        result = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise InputError(
                f"{name}: received non-integer or non-finite values, expected integer class ids"
            )
        result = array.astype(np.int64)
    else:
        raise InputError(f"{name}: received dtype {array.dtype}, expected integer class ids")
    if result.size and result.min() < 0:
        raise InputError(f"{name}: received class id {int(result.min())}, expected ids >= 0")
    return result
