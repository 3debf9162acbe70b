"""Synthetic landslide data: learnable, but not by one cue alone.

A synthetic scene is a set of smooth fields on a global pixel grid plus a list of
objects drawn once from the seed:

* **Land cover** -- a vegetation fraction ``v`` in [0, 1]. Each spectral band is the
  linear mix ``v * vegetation + (1 - v) * soil`` of two Sentinel-2-like spectra
  (vegetation dark in the visible, bright in the NIR; soil brighter in the visible
  and SWIR) plus per-pixel gaussian texture.
* **Terrain** (4 or more bands) -- the last two bands are ``slope`` (degrees,
  0..60) and ``DEM`` (metres, ~200..3000), both smooth, spanning flat to steep
  ground within a chip. Slope is its own smooth field rather than the DEM's
  gradient, so its distribution (how much ground is flat, how much steep) is set
  directly; the DEM follows it loosely (steep ground sits high).
* **Landslides** (mask 1) -- irregular elongated blobs, placed preferentially on
  steep ground, clustered by a regional "trigger" field, with fresh bare soil/rock
  inside (``v`` ~ 0..0.1, brighter than ordinary soil) and slope forced steep.
* **Distractors** (mask 0, 4 or more bands) -- bare-soil patches of the same size
  and spectrum (fields, river bars) on flat ground.

So *bare and steep* is a landslide, while bare-only (distractor) or steep-only
(vegetated hillside) is not: a rule on one cue is clearly worse than a rule on
both. Positives are a few percent of pixels and some chips have none, as in
Landslide4Sense. With fewer than 4 bands there is no terrain and no distractor:
landslides are the bright bare blobs.

Every field is a pure function of global pixel coordinates (value noise on seeded
coarse lattices; texture noise from RNGs seeded per fixed 64x64 global tile), and
objects are a global list, so any window ``(row0, col0, rows, cols)`` renders
identically however a scene is cut. That lets :func:`write_scene` stream scenes far
larger than memory block by block, and makes a chip simply a one-window scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.windows import Window

from geoseg_batch.data.bands import default_band_names
from geoseg_batch.errors import ConfigError

# Sentinel-2-like reflectance at B1..B12 (no B8A). B10 (cirrus) is dark for both.
_VEG_SPECTRUM = np.array(
    [0.030, 0.040, 0.070, 0.040, 0.100, 0.250, 0.320, 0.350, 0.330, 0.010, 0.180, 0.090]
)
_SOIL_SPECTRUM = np.array(
    [0.080, 0.100, 0.140, 0.180, 0.200, 0.220, 0.240, 0.250, 0.260, 0.020, 0.330, 0.280]
)
_RED_POSITION = 3.0  # B4: the one band that best separates bare from vegetated

# Stream ids keep the RNG of each field / purpose independent of the others.
_VEG, _STEEP, _RELIEF, _TRIGGER, _TEXTURE, _OBJECTS = range(6)
_CHIP_STREAM, _SCENE_STREAM = 101, 102

_TILE = 64  # texture tile edge; texture depends only on the tile grid, not on windows
_SPECTRAL_SIGMA = 0.02
_SLOPE_SIGMA = 0.8  # degrees
_DEM_SIGMA = 2.0  # metres
_MAX_SLOPE = 60.0
_LANDSLIDE_MIN_SLOPE = (26.0, 40.0)  # range of the per-landslide forced minimum
_DISTRACTOR_MAX_SLOPE = (1.5, 6.0)  # range of the per-distractor forced maximum

# Object size: semi-major axis log-uniform in pixels, axis ratio uniform.
_SEMI_MAJOR = (5.0, 18.0)
_AXIS_RATIO = (0.3, 0.8)
_HARMONICS = (2, 3, 4, 5)  # boundary perturbation r(phi) = 1 + sum a_k cos(k phi + p_k)
_HARMONIC_AMP = 0.09
# Candidate densities (per pixel) before thinning; calibrated for ~4 % positives and
# ~0.8x as much distractor area as landslide area: enough that "bare" alone is a poor rule.
_LANDSLIDE_CANDIDATE_DENSITY = 9.0e-4
_DISTRACTOR_CANDIDATE_DENSITY = 5.0e-4
_FLAT_LAND_THINNING = 0.6  # stands in for the steepness thinning when there is no terrain

_NODATA = -9999.0
_TRUTH_NODATA = 255
_COLLAR = 0.2  # each nodata corner triangle spans this fraction of both edges (2 % of area)
SYNTHETIC_PIXEL_M = 10.0  # ground sampling distance of synthetic chips and projected scenes
_UTM_PIXEL, _UTM_ORIGIN = SYNTHETIC_PIXEL_M, (500000.0, 5200000.0)
_GEO_PIXEL, _GEO_ORIGIN = 0.0001, (15.03, 46.96)  # overlaps the UTM scenes: the demo mosaics both CRSs


@dataclass(frozen=True)
class Blob:
    """One landslide or distractor: a perturbed, rotated ellipse and what it does inside."""

    landslide: bool
    cy: float
    cx: float
    semi_major: float
    semi_minor: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase)
    vegetation: float  # v inside
    brightness: float  # soil spectrum multiplier inside
    slope_limit: float  # landslide: slope floor; distractor: slope ceiling (degrees)

    @property
    def radius(self) -> float:
        """Radius of a circle about the centre that contains the whole blob."""
        return self.semi_major * (1.0 + sum(a for _, a, _ in self.harmonics)) + 1.0


@dataclass(frozen=True)
class SceneLayout:
    """Everything that defines a synthetic scene; render any window with :func:`render_window`."""

    seed: int
    height: int
    width: int
    bands: int
    veg_cells: tuple[int, ...] = (48, 16)  # value-noise lattice spacing per octave, pixels
    steep_cells: tuple[int, ...] = (64, 24)
    relief_cells: tuple[int, ...] = (256, 96)
    trigger_cells: tuple[int, ...] = (192,)
    blobs: tuple[Blob, ...] = ()

    @property
    def has_terrain(self) -> bool:
        """Whether the last two bands are slope and DEM."""
        return self.bands >= 4

    @property
    def spectral_bands(self) -> int:
        """Number of reflectance bands."""
        return self.bands - 2 if self.has_terrain else self.bands

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names, as written into scene band descriptions."""
        return default_band_names(self.bands)


@dataclass(frozen=True)
class SynthResult:
    """Where :func:`synth` wrote its data."""

    chips_dir: Path | None
    scenes: tuple[Path, ...]
    truths: tuple[Path, ...]


# --------------------------------------------------------------------------- validation


def _require_int(name: str, value: object, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: got {value!r}, expected an integer >= {minimum}; {hint}")
    return int(value)


# --------------------------------------------------------------------------- spectra


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


# --------------------------------------------------------------------------- value noise


def _fade(t: np.ndarray) -> np.ndarray:
    # Quintic fade: C2-smooth across lattice cells, so fields show no grid creases.
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _lattice(seed: int, field: int, octave: int, cell: int, height: int, width: int) -> np.ndarray:
    shape = (height // cell + 2, width // cell + 2)
    return np.random.default_rng([seed, field, octave]).random(shape, dtype=np.float32)


def _axis_weights(start: int, count: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.arange(start, start + count)
    nodes = pixels // cell
    # Integer remainder keeps the weight of a pixel identical whichever window holds it.
    weight = _fade((pixels - nodes * cell).astype(np.float32) / np.float32(cell))
    return nodes, weight


def _noise_octave_window(
    lattice: np.ndarray, cell: int, row0: int, col0: int, rows: int, cols: int
) -> np.ndarray:
    ri, ry = _axis_weights(row0, rows, cell)
    ci, cx = _axis_weights(col0, cols, cell)
    sub = lattice[ri[0] : ri[-1] + 2, ci[0] : ci[-1] + 2]
    ri = ri - ri[0]
    ci = ci - ci[0]
    along_rows = sub[ri] * (1.0 - ry)[:, None] + sub[ri + 1] * ry[:, None]
    return along_rows[:, ci] * (1.0 - cx) + along_rows[:, ci + 1] * cx


def _noise_octave_points(lattice: np.ndarray, cell: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    ri = np.clip(np.floor(ys / cell).astype(np.int64), 0, lattice.shape[0] - 2)
    ci = np.clip(np.floor(xs / cell).astype(np.int64), 0, lattice.shape[1] - 2)
    ry = _fade(np.clip(ys / cell - ri, 0.0, 1.0))
    cx = _fade(np.clip(xs / cell - ci, 0.0, 1.0))
    top = lattice[ri, ci] * (1.0 - cx) + lattice[ri, ci + 1] * cx
    bottom = lattice[ri + 1, ci] * (1.0 - cx) + lattice[ri + 1, ci + 1] * cx
    return top * (1.0 - ry) + bottom * ry


def _octave_weights(count: int) -> list[float]:
    weights = [0.5**k for k in range(count)]
    total = sum(weights)
    return [w / total for w in weights]


def _field_window(
    layout: SceneLayout, field: int, cells: tuple[int, ...], row0: int, col0: int, rows: int, cols: int
) -> np.ndarray:
    """Smooth noise in [0, 1] (mean ~0.5) over a window, summed over octaves."""
    out = np.zeros((rows, cols), dtype=np.float32)
    for octave, (cell, weight) in enumerate(zip(cells, _octave_weights(len(cells)))):
        lattice = _lattice(layout.seed, field, octave, cell, layout.height, layout.width)
        out += np.float32(weight) * _noise_octave_window(lattice, cell, row0, col0, rows, cols)
    return out


def _field_points(
    seed: int, field: int, cells: tuple[int, ...], height: int, width: int, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    # Points may lie outside the grid (blob centres in the margin); clamping is fine there.
    out = np.zeros(ys.shape, dtype=float)
    for octave, (cell, weight) in enumerate(zip(cells, _octave_weights(len(cells)))):
        lattice = _lattice(seed, field, octave, cell, height, width)
        out += weight * _noise_octave_points(lattice, cell, ys, xs)
    return out


# --------------------------------------------------------------------------- field -> physics


def _vegetation_fraction(noise: np.ndarray) -> np.ndarray:
    # Background is mostly vegetated (>= 0.4) so bare ground stands out as objects.
    return np.clip(0.4 + 1.3 * (noise - 0.25), 0.4, 1.0)


def _slope_degrees(noise: np.ndarray) -> np.ndarray:
    # Stretch the noise (which bunches around 0.5) so a chip spans flat to steep.
    stretched = np.clip((noise - 0.3) / 0.42, 0.0, 1.0)
    return _MAX_SLOPE * stretched**1.2


def _trigger_activity(noise: np.ndarray) -> np.ndarray:
    # Regional landslide-trigger intensity: zero over ~a third of the land, so landslides
    # cluster and many chips have none.
    return np.clip((noise - 0.4) / 0.35, 0.0, 1.0)


def _steep_preference(slope: np.ndarray) -> np.ndarray:
    return np.clip((slope - 10.0) / 20.0, 0.03, 1.0)


def _flat_preference(slope: np.ndarray) -> np.ndarray:
    return np.clip((15.0 - slope) / 7.0, 0.0, 1.0)


# --------------------------------------------------------------------------- layout


def _derived_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


def _draw_blobs(
    rng: np.random.Generator, count: int, ys: np.ndarray, xs: np.ndarray, landslide: bool
) -> list[Blob]:
    semi_major = np.exp(rng.uniform(math.log(_SEMI_MAJOR[0]), math.log(_SEMI_MAJOR[1]), count))
    ratio = rng.uniform(*_AXIS_RATIO, count)
    angle = rng.uniform(0.0, math.pi, count)
    amps = rng.uniform(0.0, _HARMONIC_AMP, (count, len(_HARMONICS)))
    phases = rng.uniform(0.0, 2.0 * math.pi, (count, len(_HARMONICS)))
    vegetation = rng.uniform(0.0, 0.1, count)
    if landslide:
        brightness = rng.uniform(1.05, 1.25, count)  # fresh rock/soil is brighter
        slope_limit = rng.uniform(*_LANDSLIDE_MIN_SLOPE, count)
    else:
        brightness = rng.uniform(0.95, 1.15, count)  # overlaps landslides on purpose
        slope_limit = rng.uniform(*_DISTRACTOR_MAX_SLOPE, count)
    return [
        Blob(
            landslide=landslide,
            cy=float(ys[i]),
            cx=float(xs[i]),
            semi_major=float(semi_major[i]),
            semi_minor=float(semi_major[i] * ratio[i]),
            angle=float(angle[i]),
            harmonics=tuple(
                (k, float(amps[i, n]), float(phases[i, n])) for n, k in enumerate(_HARMONICS)
            ),
            vegetation=float(vegetation[i]),
            brightness=float(brightness[i]),
            slope_limit=float(slope_limit[i]),
        )
        for i in range(count)
    ]


def _thinned_centres(
    rng: np.random.Generator, density: float, height: int, width: int, margin: float, keep
) -> tuple[np.ndarray, np.ndarray]:
    # Poisson process thinned by keep(ys, xs) in [0, 1]: an inhomogeneous Poisson process
    # whose intensity follows the fields. Centres may fall in a margin around the grid so
    # edge pixels get the same object density as interior ones.
    area = (height + 2 * margin) * (width + 2 * margin)
    count = int(rng.poisson(density * area))
    ys = rng.uniform(-margin, height + margin, count)
    xs = rng.uniform(-margin, width + margin, count)
    accept = rng.random(count) < keep(ys, xs)
    return ys[accept], xs[accept]


def scene_layout(seed: int, height: int, width: int, bands: int) -> SceneLayout:
    """The layout of a synthetic scene: grid, field lattice parameters and all objects.

    Deterministic in ``seed``; cheap even for very large scenes (objects only, no pixels).
    """
    seed = _require_int("seed", seed, 0, "use a non-negative integer seed")
    height = _require_int("height", height, 1, "scene height is in pixels")
    width = _require_int("width", width, 1, "scene width is in pixels")
    bands = _require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    layout = SceneLayout(seed=seed, height=height, width=width, bands=bands)
    rng = np.random.default_rng([seed, _OBJECTS])
    margin = _SEMI_MAJOR[1] * (1.0 + _HARMONIC_AMP * len(_HARMONICS))

    def slope_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        noise = _field_points(seed, _STEEP, layout.steep_cells, height, width, ys, xs)
        return _slope_degrees(noise)

    def trigger_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        noise = _field_points(seed, _TRIGGER, layout.trigger_cells, height, width, ys, xs)
        return _trigger_activity(noise)

    def landslide_keep(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        if not layout.has_terrain:
            return trigger_at(ys, xs) * _FLAT_LAND_THINNING
        return trigger_at(ys, xs) * _steep_preference(slope_at(ys, xs))

    ys, xs = _thinned_centres(rng, _LANDSLIDE_CANDIDATE_DENSITY, height, width, margin, landslide_keep)
    landslides = _draw_blobs(rng, len(ys), ys, xs, landslide=True)
    distractors: list[Blob] = []
    if layout.has_terrain:
        ys, xs = _thinned_centres(
            rng, _DISTRACTOR_CANDIDATE_DENSITY, height, width, margin,
            lambda y, x: _flat_preference(slope_at(y, x)),
        )
        distractors = _draw_blobs(rng, len(ys), ys, xs, landslide=False)
    # Distractors first: where one overlaps a landslide, the landslide wins.
    return SceneLayout(
        seed=seed, height=height, width=width, bands=bands, blobs=tuple(distractors + landslides)
    )


# --------------------------------------------------------------------------- rendering


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
            tile = np.random.default_rng([layout.seed, _TEXTURE, ti, tj]).standard_normal(
                (layout.bands, _TILE, _TILE), dtype=np.float32
            )
            r_lo, r_hi = max(row0, ti * _TILE), min(row0 + rows, (ti + 1) * _TILE)
            c_lo, c_hi = max(col0, tj * _TILE), min(col0 + cols, (tj + 1) * _TILE)
            out[:, r_lo - row0 : r_hi - row0, c_lo - col0 : c_hi - col0] = tile[
                :, r_lo - ti * _TILE : r_hi - ti * _TILE, c_lo - tj * _TILE : c_hi - tj * _TILE
            ]
    return out


def _render_planes(
    layout: SceneLayout, row0: int, col0: int, rows: int, cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (bands, rows, cols), mask uint8 (rows, cols)); band-first for writing."""
    window = (row0, col0, rows, cols)
    vegetation = _vegetation_fraction(_field_window(layout, _VEG, layout.veg_cells, *window))
    brightness = np.ones((rows, cols), dtype=np.float32)
    mask = np.zeros((rows, cols), dtype=np.uint8)
    slope = None
    if layout.has_terrain:
        steep_noise = _field_window(layout, _STEEP, layout.steep_cells, *window)
        slope = _slope_degrees(steep_noise).astype(np.float32)

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
        np.clip(plane, 0.0, _MAX_SLOPE, out=plane)
        relief = _field_window(layout, _RELIEF, layout.relief_cells, *window)
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
    image, mask = _render_planes(layout, row0, col0, rows, cols)
    return np.ascontiguousarray(np.moveaxis(image, 0, -1)), mask


def make_chip(rng: np.random.Generator, size: int, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (size, size, bands), mask uint8 (size, size)): one Landslide4Sense-like chip.

    A chip is a one-window scene whose layout seed is drawn from ``rng``.
    """
    size = _require_int("size", size, 8, "chips are square, at least 8 pixels on a side")
    bands = _require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    layout = scene_layout(int(rng.integers(0, 2**63 - 1)), size, size, bands)
    return render_window(layout, 0, 0, size, size)


# --------------------------------------------------------------------------- writers


def write_l4s_chips(out_dir: Path, chips: int, bands: int = 14, size: int = 128, seed: int = 0) -> Path:
    """Landslide4Sense layout: ``out_dir/img/image_N.h5`` (dataset ``img``, float32
    (size, size, bands)) and ``out_dir/mask/mask_N.h5`` (dataset ``mask``, uint8 (size, size)),
    N = 1..chips. Chip N depends only on (seed, N), not on ``chips``. Returns ``out_dir``.
    """
    chips = _require_int("chips", chips, 0, "use 0 for no chips")
    bands = _require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    size = _require_int("size", size, 8, "chips are square, at least 8 pixels on a side")
    seed = _require_int("seed", seed, 0, "use a non-negative integer seed")
    out_dir = Path(out_dir)
    (out_dir / "img").mkdir(parents=True, exist_ok=True)
    (out_dir / "mask").mkdir(parents=True, exist_ok=True)
    for n in range(1, chips + 1):
        image, mask = make_chip(np.random.default_rng([seed, _CHIP_STREAM, n]), size, bands)
        with h5py.File(out_dir / "img" / f"image_{n}.h5", "w") as f:
            f.create_dataset("img", data=image)
        with h5py.File(out_dir / "mask" / f"mask_{n}.h5", "w") as f:
            f.create_dataset("mask", data=mask)
    return out_dir


def scene_transform(crs: str) -> Affine:
    """Pixel grid of synthetic scenes: 10 m UTM-like pixels, or 0.0001 deg for geographic CRSs."""
    if CRS.from_user_input(crs).is_geographic:
        return Affine(_GEO_PIXEL, 0.0, _GEO_ORIGIN[0], 0.0, -_GEO_PIXEL, _GEO_ORIGIN[1])
    return Affine(_UTM_PIXEL, 0.0, _UTM_ORIGIN[0], 0.0, -_UTM_PIXEL, _UTM_ORIGIN[1])


def nodata_collar(layout: SceneLayout, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
    """Bool (rows, cols): True in the no-data collar, two corner triangles of a tilted footprint."""
    r = (np.arange(row0, row0 + rows) + 0.5)[:, None] / layout.height
    c = (np.arange(col0, col0 + cols) + 0.5)[None, :] / layout.width
    return (r + c < _COLLAR) | ((1.0 - r) + (1.0 - c) < _COLLAR)


def write_scene(path: Path, truth_path: Path, layout: SceneLayout, crs: str, block_rows: int = 512) -> None:
    """Write a scene as a georeferenced GeoTIFF plus its uint8 truth mask on the same grid.

    The image is float32, nodata -9999, tiled 256x256, ZSTD with the floating-point
    predictor, band descriptions = band names; the truth (deflate) has nodata 255. Both are
    written block by block through rasterio windows, so memory stays flat whatever the scene
    size. Pixels in the no-data collar (:func:`nodata_collar`) are nodata in every image
    band and 255 in the truth.
    """
    block_rows = _require_int("block_rows", block_rows, 1, "write at least one row per block")
    try:
        crs_obj = CRS.from_user_input(crs)
    except Exception as exc:  # rasterio raises CRSError; report it as the user's input
        raise ConfigError(f"crs: got {crs!r}, expected a CRS such as 'EPSG:32633' ({exc})") from exc
    common = dict(
        driver="GTiff", height=layout.height, width=layout.width, crs=crs_obj,
        transform=scene_transform(crs), tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", num_threads="ALL_CPUS", bigtiff="IF_SAFER",
    )
    # ZSTD with the floating-point predictor: for this float imagery 7x faster to decode than
    # DEFLATE (0.025 vs 0.19 s per 640x640x14 window here) and ~10 % smaller; readers decode
    # every tile window, so decoding speed is what tiled inference pays for.
    image_profile = dict(common, count=layout.bands, dtype="float32", nodata=_NODATA, compress="zstd",
                         predictor=3, zstd_level=1)
    truth_profile = dict(common, count=1, dtype="uint8", nodata=_TRUTH_NODATA)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(truth_path).parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **image_profile) as image_dst, rasterio.open(
        truth_path, "w", **truth_profile
    ) as truth_dst:
        image_dst.descriptions = layout.band_names
        truth_dst.descriptions = ("landslide",)
        for row0 in range(0, layout.height, block_rows):
            rows = min(block_rows, layout.height - row0)
            image, mask = _render_planes(layout, row0, 0, rows, layout.width)
            collar = nodata_collar(layout, row0, 0, rows, layout.width)
            image[:, collar] = _NODATA
            mask[collar] = _TRUTH_NODATA
            window = Window(0, row0, layout.width, rows)
            image_dst.write(image, window=window)
            truth_dst.write(mask, 1, window=window)


def synth(
    out: Path | str,
    chips: int = 200,
    bands: int = 14,
    size: int = 128,
    scenes: int = 2,
    seed: int = 0,
    scene_height: int = 512,
    scene_width: int = 640,
) -> SynthResult:
    """Write ``out/chips`` (Landslide4Sense layout) and ``out/scenes/scene_N.tif`` with
    ``scene_N_truth.tif`` (N = 1..scenes).

    Odd scenes are in EPSG:32633 (UTM 33N, 10 m pixels), even ones in EPSG:4326
    (0.0001 deg pixels), so consumers meet both a projected and a geographic CRS.
    """
    chips = _require_int("chips", chips, 0, "use 0 for no chips")
    bands = _require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    size = _require_int("size", size, 8, "chips are square, at least 8 pixels on a side")
    scenes = _require_int("scenes", scenes, 0, "use 0 for no scenes")
    seed = _require_int("seed", seed, 0, "use a non-negative integer seed")
    scene_height = _require_int("scene_height", scene_height, 8, "scenes are at least 8x8 pixels")
    scene_width = _require_int("scene_width", scene_width, 8, "scenes are at least 8x8 pixels")
    out = Path(out)
    chips_dir = write_l4s_chips(out / "chips", chips, bands, size, seed) if chips else None
    scene_paths: list[Path] = []
    truth_paths: list[Path] = []
    for n in range(1, scenes + 1):
        layout = scene_layout(_derived_seed(seed, _SCENE_STREAM, n), scene_height, scene_width, bands)
        scene_path = out / "scenes" / f"scene_{n}.tif"
        truth_path = out / "scenes" / f"scene_{n}_truth.tif"
        write_scene(scene_path, truth_path, layout, "EPSG:32633" if n % 2 else "EPSG:4326")
        scene_paths.append(scene_path)
        truth_paths.append(truth_path)
    return SynthResult(chips_dir=chips_dir, scenes=tuple(scene_paths), truths=tuple(truth_paths))
