"""Scene plausibility: a cheap sample of each scene's bands compared with the bundle's normalization.

At run start (before the cluster does model work) every scene is sampled: from its smallest
overview that still holds :data:`SAMPLE_PIXELS` pixels when it has overviews (GDAL picks it
for a decimated read), else from an 8 x 8 grid of 8 x 8-pixel windows spread over the scene
(4096 pixels, a few file blocks each). Nodata values and GDAL masks
(per-dataset mask, alpha band) are left out. The rule: a band whose sampled values, scaled
by the file's scale/offset, have a median ``|z|`` (``z = (value - mean) / std`` with the
bundle's training mean and std) above :data:`MEDIAN_Z_LIMIT` is out of range. A scene whose
sample holds no valid pixel is scanned block by block until one is found; when none is, the
scene is all nodata (that scan reads every block once, one at a time, on the client: memory-flat,
but as slow as one pass over the file; only a scene that is mostly or wholly nodata pays it). Either finding is a warning (one log line) and is recorded in the
manifest's summary (``plausibility``); with ``strict`` it is a refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.errors import DataError

if TYPE_CHECKING:
    from geoseg_batch.geo.scene import Scene
    from geoseg_batch.model.bundle import BundleMetadata

log = logging.getLogger(__name__)

SAMPLE_PIXELS = 4096  # per band
SAMPLE_GRID = 8  # windows per axis of the sparse sample (each SAMPLE_GRID x SAMPLE_GRID pixels)
MEDIAN_Z_LIMIT = 4.0


@dataclass(frozen=True)
class Plausibility:
    """What a scene's sample says about it against the bundle's normalization."""

    scene: str
    band_names: tuple[str, ...]  # the bundle's names of the bands fed to the model
    band_numbers: tuple[int, ...]  # their 1-based numbers in the file
    sampled: int  # valid pixels in the sample
    source: str  # "overview", "windows", "decimated" (a small scene), or "scan" (the sample missed every valid
    # pixel: blocks read until one has one)
    medians: tuple[float, ...]  # per band, scaled
    median_abs_z: tuple[float, ...]
    mean: tuple[float, ...]  # the bundle's
    std: tuple[float, ...]

    @property
    def flagged(self) -> tuple[int, ...]:
        """Positions of the bands beyond :data:`MEDIAN_Z_LIMIT`, worst first."""
        beyond = [n for n, z in enumerate(self.median_abs_z) if z > MEDIAN_Z_LIMIT]
        return tuple(sorted(beyond, key=lambda n: -self.median_abs_z[n]))

    @property
    def status(self) -> str:
        """"ok", "out_of_range" or "all_nodata"."""
        if not self.sampled:
            return "all_nodata"
        return "out_of_range" if self.flagged else "ok"

    def record(self) -> dict[str, Any]:
        """The scene's entry in the manifest summary's ``plausibility``."""
        entry: dict[str, Any] = {"status": self.status, "sampled_pixels": self.sampled, "sample": self.source}
        if self.sampled:
            entry.update({"median": [round(m, 6) for m in self.medians],
                          "median_abs_z": [round(z, 3) for z in self.median_abs_z],
                          "flagged_bands": [self.band_names[n] for n in self.flagged]})
        return entry

    def message(self) -> str | None:
        """One line saying what is wrong and its likely cause; None when the scene is plausible."""
        if self.status == "all_nodata":
            return (f"{self.scene}: every pixel is nodata (nodata value or GDAL mask): its outputs will be all "
                    "nodata; check the scene, or --nodata when the value means something else")
        if self.status == "ok":
            return None
        n = self.flagged[0]
        more = f" (and {len(self.flagged) - 1} more bands)" if len(self.flagged) > 1 else ""
        return (f"{self.scene}: band {self.band_names[n]} (file band {self.band_numbers[n]}) has a sampled median "
                f"{self.medians[n]:.6g}, but the model was trained on mean {self.mean[n]:.6g}, std {self.std[n]:.6g} "
                f"(median |z| {self.median_abs_z[n]:.1f} > {MEDIAN_Z_LIMIT:g}){more}: "
                f"{likely_cause(self.medians[n], self.mean[n], self.std[n])}; predictions are likely wrong")


def likely_cause(median: float, mean: float, std: float) -> str:
    """The likely cause of a band's sampled ``median`` lying far from the training ``mean`` (spread ``std``)."""
    scale = max(abs(mean), std)
    if abs(median) > 20 * scale:
        return (f"values ~{abs(median) / scale:.0f}x the training data's, e.g. uint16 reflectances or counts into "
                "a model trained on scaled values (0..1): rescale the scene or set its scale tag "
                "(gdal_edit.py -scale S FILE)")
    if abs(median) * 20 < scale:
        return ("values far below the training data's, e.g. reflectances 0..1 into a model trained on integer "
                "counts: give the scene in the training data's units")
    return "not the data the model was trained on (another sensor, band order or processing level?): check --bands"


def _valid(values: np.ndarray, nodata: float | None, mask: np.ndarray | None) -> np.ndarray:
    """(rows, cols) True where every band of ``values`` (bands, rows, cols) is valid."""
    valid = np.all(np.isfinite(values), axis=0) if values.dtype.kind == "f" else np.ones(values.shape[1:], bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= np.all(values != nodata, axis=0)
    if mask is not None:
        valid &= mask != 0
    return valid


def _sample_windows(shape: tuple[int, int]) -> list[Any]:
    """The sparse sample's windows: a :data:`SAMPLE_GRID` grid of small windows spread over ``shape``."""
    from rasterio.windows import Window

    rows, cols = shape
    size_r, size_c = min(SAMPLE_GRID, rows), min(SAMPLE_GRID, cols)
    starts_r = sorted({min(rows - size_r, int((i + 0.5) * rows / SAMPLE_GRID)) for i in range(SAMPLE_GRID)})
    starts_c = sorted({min(cols - size_c, int((j + 0.5) * cols / SAMPLE_GRID)) for j in range(SAMPLE_GRID)})
    return [Window(c, r, size_c, size_r) for r in starts_r for c in starts_c]


def _read_sample(src: Any, scene: Scene) -> tuple[np.ndarray, str]:
    """(valid sampled values (pixels, bands), how they were read) of the open file ``src``."""
    from rasterio.enums import Resampling

    indexes = list(scene.band_indexes)
    mask_band = indexes[0] if scene.masked else None
    if src.overviews(indexes[0]) or src.height * src.width <= 4 * SAMPLE_PIXELS:
        factor = max(1.0, (src.height * src.width / SAMPLE_PIXELS) ** 0.5)
        shape = (max(1, int(src.height / factor)), max(1, int(src.width / factor)))
        parts = [(src.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest),
                  None if mask_band is None else src.read_masks(mask_band, out_shape=shape))]
        source = "overview" if src.overviews(indexes[0]) else "decimated"  # a small scene: read whole, decimated
    else:
        windows = _sample_windows((src.height, src.width))
        parts = [(src.read(indexes, window=w), None if mask_band is None else src.read_masks(mask_band, window=w))
                 for w in windows]
        source = "windows"
    values = [np.moveaxis(v, 0, -1)[_valid(v, scene.nodata, m)] for v, m in parts]
    return np.concatenate(values).astype(np.float64), source


def _scan(src: Any, scene: Scene) -> np.ndarray:
    """The valid values (pixels, bands) of the first file block of ``src`` that has any; empty when none does
    (then every block was read, one at a time)."""
    indexes = list(scene.band_indexes)
    for _, window in src.block_windows(indexes[0]):
        mask = src.read_masks(indexes[0], window=window) if scene.masked else None
        values = src.read(indexes, window=window)
        valid = _valid(values, scene.nodata, mask)
        if valid.any():
            return np.moveaxis(values, 0, -1)[valid].astype(np.float64)
    return np.empty((0, len(indexes)), np.float64)


def sample_plausibility(scene: Scene, metadata: BundleMetadata) -> Plausibility:
    """The :class:`Plausibility` of ``scene``'s file (its own pixels, before any warp) against ``metadata``."""
    import rasterio

    mean = np.asarray(metadata.normalization["mean"], np.float64)
    std = np.maximum(np.asarray(metadata.normalization["std"], np.float64), 1e-6)
    with rasterio.open(scene.dataset) as src:  # /vsis3/... for an s3:// scene, a VRT for a STAC Item
        values, source = _read_sample(src, scene)
        if not len(values):  # a sparse sample may miss a small valid area: look before calling it all nodata
            values, source = _scan(src, scene), "scan"
    scaled = values * np.asarray(scene.scales) + np.asarray(scene.offsets)
    if len(scaled):
        medians, abs_z = np.median(scaled, axis=0), np.median(np.abs(scaled - mean) / std, axis=0)
    else:
        medians = abs_z = np.zeros(len(mean))
    return Plausibility(str(scene.path), metadata.band_names, scene.band_indexes, len(scaled), source,
                        tuple(medians.tolist()), tuple(abs_z.tolist()), tuple(mean.tolist()), tuple(std.tolist()))


CHECK_THREADS = 4
"""Scenes sampled side by side by :func:`scene_checks` (each opens its own dataset)."""


def scene_checks(scenes: dict[str, Scene], metadata: BundleMetadata, strict: bool = False) -> dict[str, Any]:
    """{stem: manifest record} of every scene's plausibility; each implausible scene is logged as one warning.

    Raises DataError with the first finding's line when ``strict`` (nothing has been started or written).
    """
    import concurrent.futures

    records, findings = {}, []
    with concurrent.futures.ThreadPoolExecutor(CHECK_THREADS) as pool:  # GDAL reads release the GIL
        sampled = pool.map(sample_plausibility, scenes.values(), [metadata] * len(scenes))
        checks = dict(zip(scenes, sampled))
    for stem, checked in checks.items():
        records[stem] = checked.record()
        message = checked.message()
        if message is not None:
            findings.append(message)
            log.warning("%s", message if strict else f"{message} (--strict refuses such scenes)")
    if strict and findings:
        more = f" (and {len(findings) - 1} more scenes)" if len(findings) > 1 else ""
        raise DataError(f"{findings[0]}{more}; refused by --strict: fix the scene, or drop --strict to predict anyway")
    return records
