"""This training process's role: the only process of a run, or rank k of n in a multi-worker run.

The training loop (:func:`geoseg_batch.training.fit.fit`) is the same in both; what
differs is asked of the role: which chips the split counts and the test evaluation see,
where this process writes, in which ``tf.distribute`` scope the model lives, whether batch
norm is synchronised over the global batch, and how the training batches are cut.
:class:`Distribution` is built by each rank of
:mod:`geoseg_batch.training.distributed`; :class:`SingleProcess` by everything else.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from geoseg_batch.data.chips import ChipCollection


class Role(Protocol):
    """What the training loop asks of the process it runs in."""

    @property
    def strategy(self) -> Any | None:
        """The ``tf.distribute`` strategy the model lives in, or None for none."""

    @property
    def chief(self) -> bool:
        """Whether this process writes the run (``out``), evaluates the test split and saves the bundle."""

    @property
    def world(self) -> int:
        """How many processes train together."""

    @property
    def synchronized_batch_norm(self) -> bool:
        """Whether batch norm statistics are taken over the global batch (all ranks)."""

    def all_chips(self, local: ChipCollection) -> ChipCollection:
        """Every chip of the run (split counts, test evaluation), given the chips this process trains on."""

    def writes_to(self, out: Path) -> Path:
        """The directory this process writes checkpoints and history to, given the run's ``out``."""

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """The context the model and optimizer are built in."""

    def train_options(self, batch_size: int, seed: int) -> dict[str, Any]:
        """``chip_dataset`` keywords for this process's training batches, given the global batch size and seed."""

    def per_epoch(self, dataset: Any) -> Any:
        """The part of the training ``dataset`` that is one epoch."""


@dataclass(frozen=True)
class SingleProcess:
    """The only process of a run: it sees every chip and writes ``out`` itself."""

    strategy: None = None
    rank: int = 0
    world: int = 1
    chief: bool = True
    synchronized_batch_norm: bool = False

    def all_chips(self, local: ChipCollection) -> ChipCollection:
        """``local``: a single process trains on every chip."""
        return local

    def writes_to(self, out: Path) -> Path:
        """``out`` itself."""
        return Path(out)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """No scope (a null context)."""
        return contextlib.nullcontext()

    def train_options(self, batch_size: int, seed: int) -> dict[str, Any]:
        """The whole batch, the job's seed, one pass over the chips per epoch."""
        return {"batch_size": batch_size, "seed": seed, "repeat": False}

    def per_epoch(self, dataset: Any) -> Any:
        """``dataset`` itself: one pass is one epoch."""
        return dataset


@dataclass(frozen=True)
class Distribution:
    """Rank ``rank`` of ``world`` in a multi-worker run (one ``MultiWorkerMirroredStrategy``)."""

    strategy: Any  # tf.distribute.MultiWorkerMirroredStrategy
    rank: int
    world: int
    steps_per_epoch: int  # the same on every rank
    full: ChipCollection  # all shards: split counts, and the chief's test evaluation
    scratch: Path  # where a non-chief rank writes what the chief writes to out

    synchronized_batch_norm = True  # every rank then updates identical moving statistics, as one process would

    @property
    def chief(self) -> bool:
        """Whether this is rank 0, which writes ``out``."""
        return self.rank == 0

    def all_chips(self, local: ChipCollection) -> ChipCollection:
        """All shards of the run (``local`` holds only this rank's)."""
        return self.full

    def writes_to(self, out: Path) -> Path:
        """``out`` on the chief, the rank's scratch directory on the others."""
        return Path(out) if self.chief else self.scratch

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """The strategy's scope: variables are mirrored on every rank."""
        return self.strategy.scope()

    def train_options(self, batch_size: int, seed: int) -> dict[str, Any]:
        """This rank's share of the global batch, a seed of its own, its chips cycled (every rank steps alike)."""
        return {"batch_size": batch_size // self.world, "seed": seed + self.rank, "repeat": True}

    def per_epoch(self, dataset: Any) -> Any:
        """The first ``steps_per_epoch`` batches: every rank runs as many steps (collectives need equal counts)."""
        return dataset.take(self.steps_per_epoch)
