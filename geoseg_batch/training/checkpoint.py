"""The files a run writes after every epoch, each atomically, and reads back to resume.

    checkpoint/last.weights.h5, checkpoint/optimizer.npz   weights and optimizer slots
    checkpoint/best.weights.h5                             best validation loss so far
    checkpoint/state.json                                  epoch, history, early-stopping state (last)
    history.csv                                            one row per epoch
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from geoseg_batch.errors import DataError
from geoseg_batch.io.publish import atomic_path, write_json
from geoseg_batch.training.state import TrainState


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """Write ``history`` (one row per epoch) to ``path`` as CSV, atomically."""
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def save_checkpoint(directory: Path, model: Any, optimizer: Any, state: TrainState, best: bool) -> None:
    """Write the epoch's checkpoint into ``directory`` (also ``best.weights.h5`` when ``best``); state.json last."""
    import keras

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "last.weights.h5", ".weights.h5") as tmp:
        model.save_weights(tmp)
    with atomic_path(directory / "optimizer.npz", ".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, *[keras.ops.convert_to_numpy(v) for v in optimizer.variables])
    if best:
        with atomic_path(directory / "best.weights.h5", ".weights.h5") as tmp:
            model.save_weights(tmp)
    write_json(directory / "state.json", state.__dict__)  # last: it marks the epoch complete


def restore_checkpoint(directory: Path, model: Any, optimizer: Any) -> None:
    """Load the last weights and optimizer slots saved in ``directory`` into ``model`` and ``optimizer``."""
    model.load_weights(directory / "last.weights.h5")
    with np.load(directory / "optimizer.npz") as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(arrays) != len(optimizer.variables):
        raise DataError(f"{directory}: checkpoint does not match this model; delete it or use another --out")
    for variable, value in zip(optimizer.variables, arrays):
        variable.assign(value)
