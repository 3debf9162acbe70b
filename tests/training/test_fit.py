"""Training: learnable synthetic data reaches F1 >= 0.90 on held-out chips; resume after SIGKILL; sweeps."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geoseg_batch import evaluate, train
from geoseg_batch.training.fit import TrainState

from tests.helpers import LEARN, LEARN_EPOCHS


@pytest.mark.slow
def test_unet_reaches_f1_090_on_held_out_split(learned_unet, learnable_shards, tmp_path):
    result = learned_unet  # train(data=learnable_shards, epochs=LEARN_EPOCHS, patience=0, **LEARN), shared
    run = result.out
    bundle = result.outputs[0]["bundle"]
    assert result.summary["chips"]["test"] > 20
    scores = evaluate(model=bundle, data=learnable_shards, out=tmp_path / "eval", split="test")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["f1"] >= 0.90, metrics
    assert scores.summary["f1"] == metrics["f1"]
    assert metrics["chips"] == result.summary["chips"]["test"]
    assert {"accuracy", "precision", "recall", "f1", "iou", "confusion_matrix", "best_threshold"} <= set(metrics)
    half = evaluate(model=bundle, data=learnable_shards, out=tmp_path / "eval16", split="test", precision="bfloat16")
    assert abs(half.summary["f1"] - metrics["f1"]) <= 0.01, (half.summary, metrics)
    for name in ("confusion_matrix.png", "pr_curve.png", "pr_curve.csv", "samples.png", "manifest.json"):
        assert (tmp_path / "eval" / name).stat().st_size > 0, name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["outputs"][0]["bundle"] == bundle
    assert {"outputs", "summary", "config", "versions", "checksums"} <= set(manifest)
    history = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in history] == list(range(1, LEARN_EPOCHS + 1))
    assert (run / "training_curves.png").exists()


@pytest.mark.slow
def test_attention_unet_trains_end_to_end(learnable_shards, tmp_path):
    result = train(data=learnable_shards, out=tmp_path / "att", epochs=LEARN_EPOCHS, patience=0,
                   model_type="attention_unet", **LEARN)
    assert result.summary["test_metrics"]["f1"] >= 0.85, result.summary["test_metrics"]
    from geoseg_batch.model.bundle import read_metadata

    assert read_metadata(result.outputs[0]["bundle"]).model_type == "attention_unet"


def _state(run: Path) -> TrainState | None:
    try:
        return TrainState.load(run / "checkpoint" / "state.json")
    except (ValueError, OSError):
        return None


@pytest.mark.slow
def test_killed_run_resumes_at_next_epoch(learnable_shards, tmp_path):
    run, epochs = tmp_path / "run", 8  # not about learning: a tiny model
    command = [sys.executable, "-m", "geoseg_batch.cli", "train", "--data", str(learnable_shards), "--out", str(run),
               "--epochs", str(epochs), "--patience", "0", "--depth", "2", "--base-filters", "4",
               "--batch-size", "16"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 300
    while (state := _state(run)) is None or state.epoch < 2:
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = _state(run).epoch
    assert 2 <= killed_after < epochs
    assert not (run / "model.keras").exists()

    result = train(data=learnable_shards, out=run, epochs=epochs, patience=0, depth=2, base_filters=4, batch_size=16)
    assert result.summary["resumed_from_epoch"] == killed_after
    assert result.summary["epochs"] == epochs
    history = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in history] == list(range(1, epochs + 1))
    assert (run / "model.keras").exists()


def test_sweep_writes_one_row_per_run_and_resumes(shards_dir, tmp_path):
    job = tmp_path / "sweep.yaml"
    job.write_text(
        f"kind: train\nout: {tmp_path / 'sweep'}\ndata: {{path: {shards_dir}}}\n"
        "model: {depth: 2, base_filters: 4}\ntrain: {epochs: 1, batch_size: 16}\n"
        "sweep:\n  base_filters: [2, 4]\n  learning_rate: [0.001, 0.01]\n"
    )
    result = train(job)
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "results.csv")))
    assert [r["run"] for r in rows] == ["unet_f2_lr0.001_b16", "unet_f2_lr0.01_b16",
                                        "unet_f4_lr0.001_b16", "unet_f4_lr0.01_b16"]
    for row in rows:
        assert Path(row["bundle"]).exists()
        assert all(0.0 <= float(row[k]) <= 1.0 for k in ("precision", "recall", "f1", "iou"))
    assert len(result.outputs) == 4
    first = (tmp_path / "sweep" / "runs" / rows[0]["run"] / "run.json").stat().st_mtime_ns
    (tmp_path / "sweep" / "runs" / rows[3]["run"] / "run.json").unlink()  # as if killed during the last run
    train(job)
    assert (tmp_path / "sweep" / "runs" / rows[0]["run"] / "run.json").stat().st_mtime_ns == first
    assert len(list(csv.DictReader(open(tmp_path / "sweep" / "results.csv")))) == 4
