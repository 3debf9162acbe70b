"""A scene's input quicklook from its model tasks' own reads: the scene is never decoded a second time for it.

A *thumbnail* is the scene's red, green and blue bands averaged over *cells* of ``factor`` x ``factor`` pixels of
the scene grid, aligned to its origin (``factor``: the smallest integer that brings the longer side to at most
``max_side``). Each model task sums its tiles' cores over the cells they cover (:func:`thumbnail_piece`): a *piece*,
returned with the tile's record. A core's edge cells are partial; the neighbouring tiles' pieces complete them when
the pieces are added up (:func:`assembled`). A cell's value is the mean of its valid pixels on a lattice of every
``step``-th row and column of the scene (``step``: a third of ``factor``, rounded, at least 1: about 9 samples per
cell), NaN where it has none. Summing every pixel cost ~30 ms per Mpx (8 ms per tile of 512 of a 14-band scene),
half as much as the near-free bench model's own forward pass; the lattice costs 0.6-0.7 ms per such tile at the 64 Mpx
bench scene's factor (11) and 1.5-2.6 ms at the 16 Mpx one's (6), and still averages enough pixels not to alias.

The sums are over the model's input, the normalized values. Normalization is a positive affine map per band, and
the quicklook's 2-98 % stretch per channel (:func:`~geoseg_batch.report.rgb.rgb_composite`) gives the same image for
any such map, so the raw values are never needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg_batch.geo.grid import Window

QUICKLOOK_SIDE = 768
"""The longest side of a quicklook, in pixels (:func:`~geoseg_batch.report.quicklooks.quicklook_png`'s default)."""


@dataclass(frozen=True)
class ThumbnailSpec:
    """What the model tasks sum for a scene's thumbnail: cells of ``factor`` pixels, and the positions of its red,
    green and blue bands among the model's input bands (with the names the quicklook shows)."""

    factor: int
    bands: tuple[int, int, int]
    names: tuple[str, str, str]

    @property
    def step(self) -> int:
        """The lattice's step: every ``step``-th row and column of the scene is summed."""
        return max(1, round(self.factor / 3))


@dataclass(frozen=True)
class ThumbnailPiece:
    """One tile core's part of a thumbnail: per cell it covers (from cell ``origin``, (row, col)), the sums of its
    valid pixels' red, green and blue values (rows, cols, 3) and their count (rows, cols)."""

    origin: tuple[int, int]
    sums: np.ndarray
    counts: np.ndarray


def thumbnail_spec(descriptions: tuple[str | None, ...], band_indexes: tuple[int, ...], shape: tuple[int, int],
                   max_side: int = QUICKLOOK_SIDE) -> ThumbnailSpec | None:
    """The :class:`ThumbnailSpec` of a scene whose file bands are named ``descriptions`` and whose model input is
    its bands ``band_indexes`` (1-based, in the model's order), on a grid of ``shape``; None when one of the bands
    the quicklook shows (:func:`~geoseg_batch.report.rgb.rgb_band_indices`) is not a model input."""
    from geoseg_batch.report.rgb import rgb_band_indices

    names = [d or f"band {i + 1}" for i, d in enumerate(descriptions)]
    picked = rgb_band_indices(names)
    if any(i + 1 not in band_indexes for i in picked):
        return None
    factor = max(1, -(-max(shape) // max_side))
    bands = tuple(band_indexes.index(i + 1) for i in picked)
    return ThumbnailSpec(factor, bands, tuple(names[i] for i in picked))  # type: ignore[arg-type]


def cells_shape(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    """(rows, cols) of the cells of ``factor`` pixels that cover a grid of ``shape``."""
    return -(-shape[0] // factor), -(-shape[1] // factor)


def thumbnail_piece(core: Window, values: np.ndarray, valid: np.ndarray, spec: ThumbnailSpec
                    ) -> ThumbnailPiece | None:
    """The :class:`ThumbnailPiece` of the tile ``core``: ``values`` (rows, cols, bands) its model input, zero where
    ``valid`` (rows, cols) is False (as normalization leaves it); None when no pixel is valid."""
    step = spec.step
    (row, first_row), (col, first_col) = _lattice(core.row0, core.row1, spec), _lattice(core.col0, core.col1, spec)
    lattice = (slice((-core.row0) % step, None, step), slice((-core.col0) % step, None, step))
    sampled = valid[lattice]
    if not sampled.any():
        return None
    counts = np.add.reduceat(np.add.reduceat(sampled, row, axis=0, dtype=np.int32), col, axis=1)
    rgb = values[lattice][..., list(spec.bands)]  # one contiguous copy: summed row by row, as vectors
    sums = np.add.reduceat(np.add.reduceat(rgb, row, axis=0), col, axis=1)
    return ThumbnailPiece((first_row, first_col), sums, counts)


def _lattice(start: int, stop: int, spec: ThumbnailSpec) -> tuple[np.ndarray, int]:
    """(the indices among the lattice's lines in ``start:stop`` at which a new cell begins, the first's cell)."""
    lines = np.arange(start + (-start) % spec.step, stop, spec.step)
    cells = lines // spec.factor
    return np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]), int(cells[0]) if len(cells) else 0


def assembled(pieces: list[ThumbnailPiece], shape: tuple[int, int], spec: ThumbnailSpec) -> np.ndarray:
    """The thumbnail (rows, cols, 3) float32 of a grid of ``shape``: the pieces added up, each cell the mean of its
    valid pixels (NaN where it has none)."""
    rows, cols = cells_shape(shape, spec.factor)
    sums, counts = np.zeros((rows, cols, 3), np.float64), np.zeros((rows, cols), np.int64)
    for piece in pieces:
        row, col = piece.origin
        height, width = piece.counts.shape
        sums[row:row + height, col:col + width] += piece.sums
        counts[row:row + height, col:col + width] += piece.counts
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[..., None]
    return np.where(counts[..., None] > 0, means, np.nan).astype(np.float32)
