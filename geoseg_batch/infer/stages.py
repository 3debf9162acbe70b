"""Where a model task's time goes: seconds per stage, measured on the worker and reported with the tiles.

A task's *stages* are ``read`` (the scene window and its mask from GDAL), ``normalize`` (model input and the
valid mask), ``model`` (the forward passes, the copy into the model's input buffer included) and ``write``
(cropping or blending, encoding, the zarr chunks and the completion records). Each task times its own stages
with :class:`StageClock` and each :class:`~geoseg_batch.infer.segment.TileRecord` carries its share; a run's
summary adds them up over every worker thread (:func:`stage_totals`), so its ``stage_seconds`` say, in
thread-seconds, what the tiles phase spent where: the figure `bench predict --roofline` compares with the decode
ceiling and the model's raw speed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields

STAGES = ("read", "normalize", "model", "write")


@dataclass(frozen=True)
class StageSeconds:
    """Seconds spent in each stage (see the module docstring)."""

    read: float = 0.0
    normalize: float = 0.0
    model: float = 0.0
    write: float = 0.0

    def __add__(self, other: StageSeconds) -> StageSeconds:
        return StageSeconds(*(getattr(self, s) + getattr(other, s) for s in STAGES))

    def share(self, parts: int) -> StageSeconds:
        """These seconds split evenly over ``parts`` (a task's windows); unchanged for fewer than two."""
        return self if parts < 2 else StageSeconds(*(getattr(self, s) / parts for s in STAGES))


@dataclass
class StageClock:
    """Adds up the wall time of the stages a task runs through (:meth:`timing`)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextlib.contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        """Time the block it wraps as ``stage`` (one of :data:`STAGES`)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    def total(self) -> StageSeconds:
        """The seconds timed so far, per stage."""
        return StageSeconds(**self.seconds)


def stage_totals(times: Iterable[StageSeconds]) -> dict[str, float]:
    """{stage: thread-seconds} summed over ``times`` (rounded to ms), for a run's summary."""
    total = sum(times, StageSeconds())
    return {f.name: round(getattr(total, f.name), 3) for f in fields(total)}
