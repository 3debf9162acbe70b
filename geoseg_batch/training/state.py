"""What a run records besides weights: its epochs so far, and when to stop early.

:class:`TrainState` is ``checkpoint/state.json``: enough to continue as if never stopped.
:class:`EarlyStopping` decides, epoch by epoch, whether the monitored loss still improves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EarlyStopping:
    """Stop once the monitored loss has not improved for ``patience`` epochs (0: never stop early)."""

    patience: int
    epochs: int  # the last epoch of the run: ending there is no early stop
    best: float = float("inf")  # lowest monitored loss so far
    best_epoch: int = 0
    wait: int = 0  # epochs since the best one
    improved: bool = False  # whether the last update set a new best

    def update(self, epoch: int, loss: float) -> bool:
        """Record ``epoch``'s monitored loss; True when training should stop after it."""
        self.improved = loss < self.best
        if self.improved:
            self.best, self.best_epoch, self.wait = loss, epoch, 0
        else:
            self.wait += 1
        return bool(self.patience and self.wait >= self.patience and epoch < self.epochs)


@dataclass
class TrainState:
    """What a checkpoint records besides weights: enough to continue as if never stopped."""

    epoch: int = 0  # last completed epoch (1-based); 0 = none
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    wait: int = 0
    stopped_early: bool = False

    @classmethod
    def load(cls, path: Path) -> TrainState | None:
        """The state saved at ``path``, or None when there is none (a fresh run)."""
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def early_stopping(self, patience: int, epochs: int) -> EarlyStopping:
        """An early-stopping decision that continues from this state (best loss, its epoch, the wait)."""
        return EarlyStopping(patience, epochs, self.best_val_loss, self.best_epoch, self.wait)

    def record(self, epoch: int, row: dict[str, float], stopping: EarlyStopping, stop: bool) -> None:
        """Mark ``epoch`` (its history ``row``) complete, with the early-stopping state after it."""
        self.epoch = epoch
        self.history.append(row)
        self.best_val_loss, self.best_epoch, self.wait = stopping.best, stopping.best_epoch, stopping.wait
        self.stopped_early = stop
