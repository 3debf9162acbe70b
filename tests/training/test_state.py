"""Early stopping and the run state it is saved in; the two roles a training process can have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geoseg_batch.training.fit import TrainState
from geoseg_batch.training.role import Distribution, SingleProcess
from geoseg_batch.training.state import EarlyStopping


def _decisions(stopping: EarlyStopping, losses: list[float], first_epoch: int = 1) -> list[tuple[bool, bool]]:
    return [(stopping.update(epoch, loss), stopping.improved) for epoch, loss in enumerate(losses, first_epoch)]


def test_early_stopping_waits_patience_epochs_without_improvement():
    stopping = EarlyStopping(patience=2, epochs=10)
    assert _decisions(stopping, [1.0, 0.8, 0.9, 0.8]) == [(False, True), (False, True), (False, False), (True, False)]
    assert (stopping.best, stopping.best_epoch, stopping.wait) == (0.8, 2, 2)


def test_early_stopping_never_stops_with_patience_0_or_at_the_last_epoch():
    assert not any(stop for stop, _ in _decisions(EarlyStopping(patience=0, epochs=5), [1.0, 2.0, 3.0, 4.0, 5.0]))
    last = EarlyStopping(patience=1, epochs=2)
    assert _decisions(last, [1.0, 2.0]) == [(False, True), (False, False)]  # epoch 2 is the end, not an early stop


def test_nan_loss_is_no_improvement():
    stopping = EarlyStopping(patience=1, epochs=5)
    assert _decisions(stopping, [1.0, float("nan")]) == [(False, True), (True, False)]


def test_state_saves_and_resumes_the_early_stopping_decision(tmp_path: Path):
    state = TrainState()
    stopping = state.early_stopping(patience=2, epochs=6)
    for epoch, loss in enumerate([1.0, 0.5, 0.7], 1):
        state.record(epoch, {"epoch": epoch, "val_loss": loss}, stopping, stopping.update(epoch, loss))
    (tmp_path / "state.json").write_text(json.dumps(state.__dict__))
    resumed = TrainState.load(tmp_path / "state.json")
    assert resumed == state
    assert (resumed.epoch, resumed.best_val_loss, resumed.best_epoch, resumed.wait, resumed.stopped_early) == \
        (3, 0.5, 2, 1, False)
    again = resumed.early_stopping(patience=2, epochs=6)
    assert again.update(4, 0.6) is True  # the wait carried over: second epoch without improvement
    assert TrainState.load(tmp_path / "missing.json") is None


class _Dataset:
    def take(self, steps: int) -> tuple[str, int]:
        return ("take", steps)


def test_single_process_and_rank_roles(tmp_path: Path):
    single = SingleProcess()
    assert (single.chief, single.world, single.strategy, single.synchronized_batch_norm) == (True, 1, None, False)
    assert single.all_chips("local") == "local"
    assert single.writes_to(tmp_path) == tmp_path
    assert single.train_options(16, 3) == {"batch_size": 16, "seed": 3, "repeat": False}
    dataset = _Dataset()
    assert single.per_epoch(dataset) is dataset
    with single.scope():
        pass

    ranks = [Distribution(None, rank, 4, 7, "all", tmp_path / str(rank)) for rank in range(4)]
    assert [r.chief for r in ranks] == [True, False, False, False]
    assert [r.writes_to(tmp_path / "out") for r in ranks[:2]] == [tmp_path / "out", tmp_path / "1"]
    assert ranks[2].all_chips("local") == "all"
    assert ranks[2].synchronized_batch_norm
    assert ranks[3].train_options(16, 3) == {"batch_size": 4, "seed": 6, "repeat": True}
    assert ranks[1].per_epoch(dataset) == ("take", 7)


@pytest.mark.parametrize("module", ["geoseg_batch.training.fit", "geoseg_batch.training.distributed"])
def test_public_names_stay_where_they_were(module: str):
    import importlib

    names = {"geoseg_batch.training.fit": ["fit", "FitResult", "TrainState", "weights_digest", "TrainLoop",
                                           "BUNDLE_NAME", "HISTORY_NAME", "CURVES_NAME"],
             "geoseg_batch.training.distributed": ["train_on_cluster", "run_rank", "rank_dir", "Distribution",
                                                   "RankResult", "balanced_assignment", "steps_per_epoch"]}[module]
    loaded = importlib.import_module(module)
    assert all(hasattr(loaded, name) for name in names)
