"""The layout of a synthetic scene: its grid, the lattices of its smooth fields, and its objects.

A layout holds no pixels: it is cheap even for very large scenes, and any window of it
renders identically (:func:`geoseg_batch.data.synthetic.render.render_window`).
Landslides are placed preferentially on steep ground where the regional trigger field is
active; distractors (with terrain) on flat ground.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geoseg_batch.data.bands import default_band_names
from geoseg_batch.data.synthetic.noise import field_points
from geoseg_batch.errors import ConfigError

# Stream ids keep the RNG of each field / purpose independent of the others.
VEG_FIELD, STEEP_FIELD, RELIEF_FIELD, TRIGGER_FIELD, TEXTURE_STREAM, OBJECTS_STREAM = range(6)

MAX_SLOPE = 60.0
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

    @property
    def grid(self) -> tuple[int, int]:
        """(height, width): the pixel grid every field's lattice covers."""
        return self.height, self.width


def require_int(name: str, value: object, minimum: int, hint: str) -> int:
    """``value`` as an int; ConfigError (received, expected, ``hint``) unless an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: got {value!r}, expected an integer >= {minimum}; {hint}")
    return int(value)


# --------------------------------------------------------------------------- field -> physics


def vegetation_fraction(noise: np.ndarray) -> np.ndarray:
    """Vegetation fraction in [0.4, 1] from the vegetation field's noise."""
    # Background is mostly vegetated (>= 0.4) so bare ground stands out as objects.
    return np.clip(0.4 + 1.3 * (noise - 0.25), 0.4, 1.0)


def slope_degrees(noise: np.ndarray) -> np.ndarray:
    """Slope in degrees (0..MAX_SLOPE) from the steepness field's noise."""
    # Stretch the noise (which bunches around 0.5) so a chip spans flat to steep.
    stretched = np.clip((noise - 0.3) / 0.42, 0.0, 1.0)
    return MAX_SLOPE * stretched**1.2


def _trigger_activity(noise: np.ndarray) -> np.ndarray:
    # Regional landslide-trigger intensity: zero over ~a third of the land, so landslides
    # cluster and many chips have none.
    return np.clip((noise - 0.4) / 0.35, 0.0, 1.0)


def _steep_preference(slope: np.ndarray) -> np.ndarray:
    return np.clip((slope - 10.0) / 20.0, 0.03, 1.0)


def _flat_preference(slope: np.ndarray) -> np.ndarray:
    return np.clip((15.0 - slope) / 7.0, 0.0, 1.0)


# --------------------------------------------------------------------------- objects


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
    rng: np.random.Generator, density: float, height: int, width: int, margin: float,
    keep: Callable[[np.ndarray, np.ndarray], np.ndarray],
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
    seed = require_int("seed", seed, 0, "use a non-negative integer seed")
    height = require_int("height", height, 1, "scene height is in pixels")
    width = require_int("width", width, 1, "scene width is in pixels")
    bands = require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    layout = SceneLayout(seed=seed, height=height, width=width, bands=bands)
    rng = np.random.default_rng([seed, OBJECTS_STREAM])
    margin = _SEMI_MAJOR[1] * (1.0 + _HARMONIC_AMP * len(_HARMONICS))

    def slope_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return slope_degrees(field_points(seed, STEEP_FIELD, layout.steep_cells, layout.grid, ys, xs))

    def trigger_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return _trigger_activity(field_points(seed, TRIGGER_FIELD, layout.trigger_cells, layout.grid, ys, xs))

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
