"""Pixels of a synthetic scene: any window of a :class:`SceneLayout` as image bands and a mask.

Each spectral band mixes a vegetation and a soil spectrum by the vegetation fraction, plus
gaussian texture from RNGs seeded per fixed 64x64 global tile; with terrain the last two
bands are slope and DEM. Every value depends only on global pixel coordinates, so windows
tiled any way give the same pixels as one big window.
"""

from __future__ import annotations

import math

import numpy as np

from geoseg_batch.data.synthetic.layout import (
    MAX_SLOPE,
    RELIEF_FIELD,
    STEEP_FIELD,
    TEXTURE_STREAM,
    VEG_FIELD,
    Blob,
    SceneLayout,
    require_int,
    scene_layout,
    slope_degrees,
    vegetation_fraction,
)
from geoseg_batch.data.synthetic.noise import field_window
from geoseg_batch.errors import ConfigError

# Sentinel-2-like reflectance at B1..B12 (no B8A). B10 (cirrus) is dark for both.
_VEG_SPECTRUM = np.array(
    [0.030, 0.040, 0.070, 0.040, 0.100, 0.250, 0.320, 0.350, 0.330, 0.010, 0.180, 0.090]
)
_SOIL_SPECTRUM = np.array(
    [0.080, 0.100, 0.140, 0.180, 0.200, 0.220, 0.240, 0.250, 0.260, 0.020, 0.330, 0.280]
)
_RED_POSITION = 3.0  # B4: the one band that best separates bare from vegetated

_TILE = 64  # texture tile edge; texture depends only on the tile grid, not on windows
_SPECTRAL_SIGMA = 0.02
_SLOPE_SIGMA = 0.8  # degrees
_DEM_SIGMA = 2.0  # metres


def spectra(spectral_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(vegetation, soil) reflectance for ``spectral_bands`` bands, sampled off the S2 curve.

    12 bands give B1..B12 exactly; other counts interpolate evenly from B1 to B12, and a
    single band is red, where vegetation and soil differ most in the visible.
    """
    if spectral_bands == 1:
        positions = np.array([_RED_POSITION])
    else:
        positions = np.linspace(0.0, 11.0, spectral_bands)
    grid = np.arange(12, dtype=float)
    return np.interp(positions, grid, _VEG_SPECTRUM), np.interp(positions, grid, _SOIL_SPECTRUM)


def _blob_footprint(
    blob: Blob, row0: int, col0: int, rows: int, cols: int
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """(window-relative slices of the blob's bounding box, inside mask there), or None."""
    r = blob.radius
    top = max(row0, math.floor(blob.cy - r))
    bottom = min(row0 + rows, math.ceil(blob.cy + r) + 1)
    left = max(col0, math.floor(blob.cx - r))
    right = min(col0 + cols, math.ceil(blob.cx + r) + 1)
    if top >= bottom or left >= right:
        return None
    dy = (np.arange(top, bottom, dtype=float) - blob.cy)[:, None]
    dx = (np.arange(left, right, dtype=float) - blob.cx)[None, :]
    cos, sin = math.cos(blob.angle), math.sin(blob.angle)
    u = (dx * cos + dy * sin) / blob.semi_major
    w = (dy * cos - dx * sin) / blob.semi_minor
    phi = np.arctan2(w, u)
    limit = np.ones_like(phi)
    for k, amplitude, phase in blob.harmonics:
        limit += amplitude * np.cos(k * phi + phase)
    inside = u * u + w * w < limit * limit
    if not inside.any():
        return None
    return (slice(top - row0, bottom - row0), slice(left - col0, right - col0)), inside


def _texture(layout: SceneLayout, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
    # Standard normal noise (bands, rows, cols), from RNGs seeded per global 64x64 tile, so
    # every window (not only fixed blocks) sees the same per-pixel values.
    out = np.empty((layout.bands, rows, cols), dtype=np.float32)
    for ti in range(row0 // _TILE, (row0 + rows - 1) // _TILE + 1):
        for tj in range(col0 // _TILE, (col0 + cols - 1) // _TILE + 1):
            tile = np.random.default_rng([layout.seed, TEXTURE_STREAM, ti, tj]).standard_normal(
                (layout.bands, _TILE, _TILE), dtype=np.float32
            )
            r_lo, r_hi = max(row0, ti * _TILE), min(row0 + rows, (ti + 1) * _TILE)
            c_lo, c_hi = max(col0, tj * _TILE), min(col0 + cols, (tj + 1) * _TILE)
            out[:, r_lo - row0 : r_hi - row0, c_lo - col0 : c_hi - col0] = tile[
                :, r_lo - ti * _TILE : r_hi - ti * _TILE, c_lo - tj * _TILE : c_hi - tj * _TILE
            ]
    return out


def render_planes(
    layout: SceneLayout, row0: int, col0: int, rows: int, cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (bands, rows, cols), mask uint8 (rows, cols)); band-first for writing."""
    window = (row0, col0, rows, cols)
    vegetation = vegetation_fraction(field_window(layout.seed, VEG_FIELD, layout.veg_cells, layout.grid, *window))
    brightness = np.ones((rows, cols), dtype=np.float32)
    mask = np.zeros((rows, cols), dtype=np.uint8)
    slope = None
    if layout.has_terrain:
        steep_noise = field_window(layout.seed, STEEP_FIELD, layout.steep_cells, layout.grid, *window)
        slope = slope_degrees(steep_noise).astype(np.float32)

    for blob in layout.blobs:
        footprint = _blob_footprint(blob, *window)
        if footprint is None:
            continue
        box, inside = footprint
        vegetation[box][inside] = blob.vegetation
        brightness[box][inside] = blob.brightness
        if blob.landslide:
            mask[box][inside] = 1
        if slope is not None:
            region = slope[box]
            limit = np.float32(blob.slope_limit)
            region[inside] = (
                np.maximum(region[inside], limit) if blob.landslide else np.minimum(region[inside], limit)
            )

    image = _texture(layout, *window)
    veg_spectrum, soil_spectrum = spectra(layout.spectral_bands)
    soil_weight = (1.0 - vegetation) * brightness
    for b in range(layout.spectral_bands):
        plane = image[b]
        plane *= np.float32(_SPECTRAL_SIGMA)
        plane += np.float32(veg_spectrum[b]) * vegetation
        plane += np.float32(soil_spectrum[b]) * soil_weight
        np.maximum(plane, 0.0, out=plane)  # reflectance is never negative
    if slope is not None:
        plane = image[-2]
        plane *= np.float32(_SLOPE_SIGMA)
        plane += slope
        np.clip(plane, 0.0, MAX_SLOPE, out=plane)
        relief = field_window(layout.seed, RELIEF_FIELD, layout.relief_cells, layout.grid, *window)
        # Steep ground sits high (mountains), flat ground low (valleys).
        elevation = 200.0 + 2800.0 * np.clip(1.4 * (0.6 * relief + 0.4 * steep_noise) - 0.2, 0.0, 1.0)
        plane = image[-1]
        plane *= np.float32(_DEM_SIGMA)
        plane += elevation
    return image, mask


def _check_window(layout: SceneLayout, row0: int, col0: int, rows: int, cols: int) -> None:
    if rows < 1 or cols < 1 or row0 < 0 or col0 < 0 or row0 + rows > layout.height or col0 + cols > layout.width:
        raise ConfigError(
            f"window (row0={row0}, col0={col0}, rows={rows}, cols={cols}) is not inside the "
            f"{layout.height}x{layout.width} scene; expected a non-empty window within the grid"
        )


def render_window(layout: SceneLayout, row0: int, col0: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Image float32 (rows, cols, bands) and mask uint8 (rows, cols) of a window of a layout.

    Pure function of global pixel coordinates: windows tiled any way give the same pixels
    as one big window.
    """
    _check_window(layout, row0, col0, rows, cols)
    image, mask = render_planes(layout, row0, col0, rows, cols)
    return np.ascontiguousarray(np.moveaxis(image, 0, -1)), mask


def make_chip(rng: np.random.Generator, size: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (size, size, bands), mask uint8 (size, size)): one Landslide4Sense-like chip.

    A chip is a one-window scene whose layout seed is drawn from ``rng``.
    """
    size = require_int("size", size, 8, "chips are square, at least 8 pixels on a side")
    bands = require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    layout = scene_layout(int(rng.integers(0, 2**63 - 1)), size, size, bands)
    return render_window(layout, 0, 0, size, size)
