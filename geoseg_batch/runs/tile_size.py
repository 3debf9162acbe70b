"""The tile a predict run uses: ``--tile`` as given, else the *auto* tile, chosen from the bundle and the workers.

A tile is predicted on its window, the tile grown by the halo on every side (the model's
receptive radius for ``exact`` stitching, the overlap for ``blend``, rounded up to the size
multiple), so the model computes at most ((tile + 2 halo) / tile)^2 pixels per output pixel
(:func:`worst_model_pixels`): exactly that on interior tiles, less on a real scene, whose
edge tiles have no halo beyond the scene (a scene of n tiles a side computes
(padded + 2 halo (n - 1)) / size per axis, n - 1 < size / tile), but for its padding to the
size multiple (padded / size: at most 1.5 % more for scenes wider than 1024, the margin of
:data:`TARGETS`). The halo is the same whatever the tile, so larger tiles waste less; but a
tile's task must fit a worker.

The auto tile (:func:`auto_tile`) is the smallest multiple of the size multiple, from
:data:`MIN_TILE` up, whose worst case is at most the stitch mode's :data:`TARGETS` (a margin
below issue 17's 1.5 exact and 1.3 blend), capped to the largest tile whose tasks fit a
worker's task budget (:func:`geoseg_batch.sizing.predict_task_bytes`, the figures the size
checks refuse by; no cap while the workers' memory limit is unknown: an existing scheduler
before it is connected). For the benchmark's model (base 16, depth 4: receptive radius 122,
size multiple 16) that is 1264 exact (halo 128; 1.42 model pixels per output pixel on
8000 x 8000; model tasks of 1.5 GiB) and 1088 blend (overlap 64; 1.24; 1.0 GiB).
"""

from __future__ import annotations

from typing import Any

from geoseg_batch.config import PredictJob

MIN_TILE = 512
"""The smallest auto tile: below it each output pixel carries more of a task's, a zarr chunk's and a completion
record's fixed costs (the tile predict defaulted to before the auto tile)."""
TARGETS = {"exact": 1.45, "blend": 1.25}
"""Model pixels per output pixel the auto tile's worst case stays within, per stitch mode."""


def worst_model_pixels(tile: int, halo: int) -> float:
    """Model pixels per output pixel of an interior tile of ``tile`` pixels grown by ``halo``: the most any scene
    computes on that grid (edge tiles compute less)."""
    return ((tile + 2 * halo) / tile) ** 2


def smallest_tile(halo: int, multiple: int, target: float) -> int:
    """The smallest multiple of ``multiple`` from :data:`MIN_TILE` up whose :func:`worst_model_pixels` with ``halo``
    is at most ``target`` (> 1)."""
    from geoseg_batch.geo.grid import round_up

    least = 2 * halo / (target**0.5 - 1)  # (1 + 2 halo / tile)^2 <= target
    tile = round_up(max(MIN_TILE, int(least)), multiple)
    while worst_model_pixels(tile, halo) > target:  # int() rounded down
        tile += multiple
    return tile


def auto_tile(metadata: Any, stitch: str, halo: int, batch_size: int, budget: Any, float_output: bool = False,
              polygons: bool = False) -> int:
    """The auto tile for the bundle's ``metadata`` (its size multiple), ``stitch`` mode and its ``halo`` (rounded
    up to the size multiple): :func:`smallest_tile` for the mode's :data:`TARGETS`, capped to the largest tile whose
    tasks (``batch_size`` windows a pass; ``float_output``, ``polygons`` for the store chunks) fit ``budget``'s task
    share (a :class:`~geoseg_batch.sizing.Budget`; uncapped when its worker limit is None). When no tile fits, the
    smallest (the size checks then refuse it, saying so)."""
    from geoseg_batch.sizing import predict_task_bytes

    multiple = metadata.size_multiple
    wanted = smallest_tile(halo, multiple, TARGETS[stitch])
    cap = budget.task_bytes
    if cap is None:
        return wanted
    fitting = (size for size in range(wanted, 0, -multiple)  # task bytes step down with the task block: scan
               if predict_task_bytes(metadata, size, halo, batch_size, float_output, polygons) <= cap)
    return next(fitting, multiple)


def job_tile(job: PredictJob, metadata: Any, halo: int, budget: Any) -> int:
    """The tile ``job`` runs with: ``job.tile`` when given, else :func:`auto_tile` for the job's stitch mode,
    batch size and outputs with ``halo`` (rounded up to the size multiple) and ``budget``."""
    if job.tile is not None:
        return job.tile
    return auto_tile(metadata, job.stitch, halo, job.batch_size, budget, job.float_output, job.polygons)
