"""Grid search: one training run per combination of a job's ``sweep:`` lists.

Runs go to ``OUT/runs/<run id>`` (each a full run directory with its bundle) and one row
per run is written to ``OUT/results.csv`` after each run: the run's parameters and its
precision, recall, F1 and IoU on the test split. Re-running the sweep skips runs whose
``run.json`` exists and resumes an interrupted run from its checkpoint.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoseg_batch.config import TrainJob
from geoseg_batch.io.publish import atomic_path, write_json
from geoseg_batch.training.fit import FitResult

RESULTS_NAME = "results.csv"
RUN_SUMMARY = "run.json"
COLUMNS = ("run", "model_type", "base_filters", "learning_rate", "batch_size", "epochs", "best_epoch",
           "precision", "recall", "f1", "iou", "bundle")


def run_summary(run_id: str, job: TrainJob, result: FitResult) -> dict[str, Any]:
    """One results row (also saved as the run's run.json)."""
    scores = result.test_metrics or {}
    return {
        "run": run_id or job.name,
        "model_type": job.model.model_type,
        "base_filters": job.model.base_filters,
        "learning_rate": job.train.learning_rate,
        "batch_size": job.train.batch_size,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        **{k: scores.get(k) for k in ("precision", "recall", "f1", "iou")},
        "bundle": str(result.bundle),
    }


def run_sweep(job: TrainJob, train_one: Callable[[TrainJob], FitResult]) -> list[dict[str, Any]]:
    """Every sweep run (skipping finished ones); returns the results rows, also in results.csv."""
    rows = []
    for run_id, run_job in job.runs():
        summary_path = Path(run_job.out) / RUN_SUMMARY
        if summary_path.exists() and Path(json.loads(summary_path.read_text())["bundle"]).exists():
            rows.append(json.loads(summary_path.read_text()))
            continue
        result = train_one(run_job)
        row = run_summary(run_id, run_job, result)
        write_json(summary_path, row)
        rows.append(row)
        _write_results(Path(job.out) / RESULTS_NAME, rows)
    _write_results(Path(job.out) / RESULTS_NAME, rows)
    return rows


def _write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
