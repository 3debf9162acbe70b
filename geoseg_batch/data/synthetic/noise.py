"""Value noise: smooth fields in [0, 1] that are pure functions of global pixel coordinates.

A field is a sum of octaves; each octave interpolates (quintic fade) a coarse lattice of
uniform values drawn from an RNG seeded by ``(seed, field, octave)``. The lattice covers
the whole ``height x width`` grid, so any window, or any set of points, evaluates to the
same values however a scene is cut.
"""

from __future__ import annotations

import numpy as np


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


def field_window(
    seed: int, field: int, cells: tuple[int, ...], grid: tuple[int, int], row0: int, col0: int, rows: int, cols: int
) -> np.ndarray:
    """Float32 (rows, cols): the field's noise in [0, 1] (mean ~0.5) over a window of the ``grid`` (height, width).

    ``cells``: the lattice spacing of each octave, in pixels (coarsest first, weights halving).
    """
    out = np.zeros((rows, cols), dtype=np.float32)
    for octave, (cell, weight) in enumerate(zip(cells, _octave_weights(len(cells)))):
        lattice = _lattice(seed, field, octave, cell, *grid)
        out += np.float32(weight) * _noise_octave_window(lattice, cell, row0, col0, rows, cols)
    return out


def field_points(
    seed: int, field: int, cells: tuple[int, ...], grid: tuple[int, int], ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Float64 like ``ys``: the field's noise at points (fractional pixel coordinates) of the ``grid``.

    Points may lie outside the grid (blob centres in the margin); they take the value at its edge.
    """
    out = np.zeros(ys.shape, dtype=float)
    for octave, (cell, weight) in enumerate(zip(cells, _octave_weights(len(cells)))):
        lattice = _lattice(seed, field, octave, cell, *grid)
        out += weight * _noise_octave_points(lattice, cell, ys, xs)
    return out
