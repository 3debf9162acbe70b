"""run_evaluate: a bundle's metrics on a split; metrics.json, PNGs, a report and manifest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoseg_batch.config import EvaluateJob, resolved
from geoseg_batch.runs.result import JobResult, write_report


def run_evaluate(job: EvaluateJob, client: Any | None = None) -> JobResult:
    """Evaluate a bundle; writes metrics.json, PNGs and manifest.json (published by
    :func:`geoseg_batch.training.evaluate.evaluate`), then the run report beside them."""
    from geoseg_batch.runtime import configure_tensorflow
    from geoseg_batch.training.evaluate import evaluate

    configure_tensorflow()
    result = evaluate(job)
    outputs = [{"metrics": str(result.metrics_path)}]
    summary = {k: result.metrics[k] for k in ("accuracy", "precision", "recall", "f1", "iou")}
    plots = [(p.stem.replace("_", " "), p) for p in sorted(Path(result.out).glob("*.png"))]
    write_report(Path(result.out), f"evaluate: {job.name}", summary, resolved(job), plots)
    return JobResult("evaluate", result.out, result.manifest, outputs, summary)
