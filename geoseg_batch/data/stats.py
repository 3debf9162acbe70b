"""Per-band statistics (mean, std, min, max) computed with Dask, streaming over chip groups.

Each group (a shard, or a run of Landslide4Sense files) reduces to :class:`BandMoments`
(count, mean, M2, min, max) in one task; moments combine pairwise (Chan et al.'s parallel
variance), so no task holds more than one group and the result does not depend on how the
groups were split. The statistics are stored beside shards as ``stats.json`` and carried
inside the model bundle, where inference normalizes with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.data.chips import ChipCollection, ChipGroup, read_group
from geoseg_batch.errors import DataError, GeosegError
from geoseg_batch.io.urls import Location, is_url

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings


@dataclass(frozen=True)
class BandMoments:
    """Running moments of each band: count, mean, sum of squared deviations (M2), min, max."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray


@dataclass(frozen=True)
class BandStats:
    """Per-band normalization statistics."""

    band_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "band_names": list(self.band_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "min": list(self.minimum),
            "max": list(self.maximum),
            "pixels": self.pixels,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> BandStats:
        return cls(
            band_names=tuple(payload["band_names"]),
            mean=tuple(payload["mean"]),
            std=tuple(payload["std"]),
            minimum=tuple(payload["min"]),
            maximum=tuple(payload["max"]),
            pixels=int(payload["pixels"]),
        )


def moments_of(images: np.ndarray) -> BandMoments:
    """Moments of a block of images (..., bands)."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    mean = flat.mean(axis=0)
    return BandMoments(flat.shape[0], mean, ((flat - mean) ** 2).sum(axis=0), flat.min(axis=0), flat.max(axis=0))


def combine(a: BandMoments | None, b: BandMoments | None) -> BandMoments | None:
    """Moments of the union of two disjoint samples."""
    if a is None or a.count == 0:
        return b
    if b is None or b.count == 0:
        return a
    count = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / count)
    m2 = a.m2 + b.m2 + delta**2 * (a.count * b.count / count)
    return BandMoments(count, mean, m2, np.minimum(a.minimum, b.minimum), np.maximum(a.maximum, b.maximum))


def group_moments(collection: ChipCollection, group: ChipGroup, block: int = 16) -> BandMoments | None:
    """Moments of one group, read ``block`` chips at a time."""
    total = None
    for start in range(0, len(group.chip_ids), block):
        images, _ = read_group(collection, group, np.arange(start, min(start + block, len(group.chip_ids))))
        total = combine(total, moments_of(images))
    return total


def compute_stats(collection: ChipCollection, client: Any | None = None) -> BandStats:
    """Band statistics of every chip, one Dask task per group, tree-reduced.

    ``client``: a distributed Client to run on; None uses Dask's local threaded scheduler.
    """
    import dask

    parts = [dask.delayed(group_moments)(collection, g) for g in collection.groups]
    while len(parts) > 1:  # tree reduction: no single task sees every group
        parts = [dask.delayed(combine)(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    if client is not None:
        (moments,) = client.compute(parts, sync=True)
    else:
        (moments,) = dask.compute(*parts, scheduler="threads")
    if moments is None:
        raise DataError(f"{collection.path}: no chips to compute statistics from")
    std = np.sqrt(moments.m2 / max(moments.count, 1))
    return BandStats(
        band_names=collection.band_names,
        mean=tuple(float(v) for v in moments.mean),
        std=tuple(float(v) for v in std),
        minimum=tuple(float(v) for v in moments.minimum),
        maximum=tuple(float(v) for v in moments.maximum),
        pixels=int(moments.count),
    )


def load_stats(path: Location, cloud: CloudSettings | None = None) -> BandStats:
    """Read a ``stats.json`` (a file, or an object read with ``cloud``'s settings).

    Raises MissingInputError for a missing object (the one-line errors of
    :mod:`geoseg_batch.io.remote`), DataError for unreadable statistics.
    """
    try:
        return BandStats.from_dict(json.loads(_text(path, cloud)))
    except GeosegError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: unreadable band statistics ({exc}); recompute with `geoseg-batch shards stats`") from None


def _text(path: Location, cloud: CloudSettings | None) -> str:
    """The text of the file or object at ``path``."""
    if not is_url(path):
        return Path(path).read_text()
    from geoseg_batch.io.remote import CloudSettings, read_text

    return read_text(str(path), cloud or CloudSettings.of())
