"""A displayable RGB composite from a multi-band chip or scene."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from geoseg_batch.errors import InputError
from geoseg_batch.report.checks import as_array


def _find_band(names: Sequence[str], pattern: str) -> int | None:
    """Index of the first band whose name fully matches ``pattern`` (case-insensitive), or None."""
    regex = re.compile(pattern, re.IGNORECASE)
    for i, name in enumerate(names):
        if regex.fullmatch(str(name).strip()):
            return i
    return None


def rgb_band_indices(band_names: Sequence[str]) -> tuple[int, int, int]:
    """Band indices used as (red, green, blue) by :func:`rgb_composite`.

    Sentinel-2 B4, B3, B2 (also spelled B04, B03, B02) when all three are present; else
    bands named red, green, blue; else the first three bands; with fewer than three
    bands, the first band for all three channels (grey).
    """
    names = list(band_names)
    if not names:
        raise InputError("band_names: received none, expected one name per band")
    for patterns in ((r"B0?4", r"B0?3", r"B0?2"), (r"red", r"green", r"blue")):
        found = [_find_band(names, p) for p in patterns]
        if all(i is not None for i in found):
            return (found[0], found[1], found[2])  # type: ignore[return-value]
    if len(names) >= 3:
        return (0, 1, 2)
    return (0, 0, 0)


def _stretch(channel: np.ndarray) -> np.ndarray:
    """``channel`` with a 2-98 percentile stretch to [0, 1]; non-finite pixels 0, a flat channel 0.5."""
    finite = np.isfinite(channel)
    out = np.zeros(channel.shape, dtype=np.float32)
    if not finite.any():
        return out
    lo, hi = np.percentile(channel[finite], [2.0, 98.0])
    if hi > lo:
        out[finite] = np.clip((channel[finite] - lo) / (hi - lo), 0.0, 1.0)
    else:
        out[finite] = 0.5  # flat band: mid-grey, so it reads as flat rather than missing
    return out


def rgb_composite(image: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    """(H, W, C) -> (H, W, 3) float32 in [0, 1] for display.

    Bands B4,B3,B2 when present (Sentinel-2 names), else red/green/blue-named bands, else
    the first three bands (one or two bands -> grey from the first); see
    :func:`rgb_band_indices`. Each channel gets a 2-98 percentile stretch over its finite
    pixels; NaN/inf pixels come out 0 and a constant channel 0.5.
    """
    image = as_array(image, "image")
    names = list(band_names)
    if image.ndim != 3 or image.shape[2] < 1:
        raise InputError(f"image: received shape {image.shape}, expected (H, W, C)")
    if image.shape[2] != len(names):
        raise InputError(
            f"image: received shape {image.shape} with {len(names)} band names, "
            f"expected (H, W, {len(names)}) to match band_names"
        )
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise InputError(f"image: received dtype {image.dtype}, expected numeric")
    indices = rgb_band_indices(names)
    channels = [_stretch(image[:, :, i].astype(np.float64)) for i in indices]
    return np.stack(channels, axis=-1)
