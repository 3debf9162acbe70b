"""Distributed training: one rank per Dask worker, MultiWorkerMirroredStrategy, shards split between ranks."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from geoseg_batch.jobfile import parse_job
from geoseg_batch.errors import RunError
from geoseg_batch.runs import run_job
from geoseg_batch.training.distributed import balanced_assignment, steps_per_epoch
from geoseg_batch.training.fit import TrainState
from tests.helpers import LEARN, LEARN_EPOCHS, local_client

JOB = {"model": {"depth": LEARN["depth"], "base_filters": LEARN["base_filters"]},
       "train": {"batch_size": LEARN["batch_size"], "seed": LEARN["seed"], "learning_rate": LEARN["learning_rate"],
                 "patience": 0}}  # as learned_unet trains


def _job(data: Path, out: Path, epochs: int, **extra: object) -> object:
    payload = {"kind": "train", "out": str(out), "data": {"path": str(data)}, **JOB, **extra}
    payload["train"] = {**JOB["train"], "epochs": epochs}
    return parse_job(payload)


def test_balanced_assignment_is_disjoint_complete_and_balanced():
    counts = [32, 30, 29, 31, 28, 33, 27, 30]
    for workers in (1, 2, 3, 8):
        assignment = balanced_assignment(counts, workers)
        groups = [g for ranks in assignment for g in ranks]
        assert sorted(groups) == list(range(len(counts)))  # disjoint and complete
        loads = [sum(counts[g] for g in ranks) for ranks in assignment]
        assert max(loads) - min(loads) <= max(counts)
    assert steps_per_epoch([120, 118], 8) == 15
    with pytest.raises(ValueError, match="only 8 shards"):
        balanced_assignment(counts, 9)


@pytest.fixture(scope="module")
def two_workers():
    with local_client(2, processes=True) as client:
        yield client


@pytest.mark.slow
@pytest.mark.cluster
def test_two_workers_keep_identical_weights_and_match_single_process_f1(learnable_shards, learned_unet, tmp_path,
                                                                         two_workers):
    single = learned_unet  # run_job(_job(learnable_shards, ..., LEARN_EPOCHS)) in one process, shared
    distributed = run_job(_job(learnable_shards, tmp_path / "two", LEARN_EPOCHS), two_workers)
    assert single.summary["epochs"] == distributed.summary["epochs"] == LEARN_EPOCHS
    ranks = distributed.summary["workers"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] is not None
    shards = [s for r in ranks for s in r["shards"]]
    assert sorted(shards) == sorted(p.name for p in learnable_shards.glob("*.h5"))  # disjoint and complete
    assert len(set(shards)) == len(shards) == 8
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["summary"]["workers"] == ranks
    assert Path(distributed.outputs[0]["bundle"]).exists()
    f1_single = single.summary["test_metrics"]["f1"]
    f1_two = distributed.summary["test_metrics"]["f1"]
    assert f1_two >= 0.85 and abs(f1_two - f1_single) <= 0.03, (f1_single, f1_two)


@pytest.mark.slow
@pytest.mark.cluster
def test_killed_worker_fails_fast_and_a_rerun_resumes(shards_dir, tmp_path, two_workers):
    out, epochs = tmp_path / "run", 6  # not about learning: the small shards (4 of 32x32 chips), a tiny model
    job = _job(shards_dir, out, epochs, model={"depth": 2, "base_filters": 4})
    victim = sorted(two_workers.scheduler_info()["workers"])[1]  # rank 1
    pid = two_workers.run(os.getpid)[victim]

    def kill_after_two_epochs() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = _state(out)
            if state is not None and state.epoch >= 2:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_two_epochs)
    killer.start()
    started = time.monotonic()
    with pytest.raises(RunError, match="rank 1"):
        run_job(job, two_workers)
    killer.join()
    assert time.monotonic() - started < 240
    done = _state(out).epoch
    assert 2 <= done < epochs
    two_workers.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker

    result = run_job(job, two_workers)
    assert result.summary["resumed_from_epoch"] >= done
    assert result.summary["epochs"] == epochs
    history = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in history] == list(range(1, epochs + 1))


def _state(out: Path) -> TrainState | None:
    try:
        return TrainState.load(out / "checkpoint" / "state.json")
    except (ValueError, OSError):
        return None
