"""run_evaluate: a bundle's metrics on a split; metrics.json, PNGs, a report and manifest.json, published together."""

from __future__ import annotations

from typing import Any

from geoseg_batch.config import EvaluateJob, resolved
from geoseg_batch.io.publication import Publication
from geoseg_batch.io.publish import ensure_replaceable
from geoseg_batch.runs.result import JobResult, write_report


def run_evaluate(job: EvaluateJob, client: Any | None = None) -> JobResult:
    """Evaluate a bundle; metrics.json, PNGs, the run report and manifest.json, staged and published at once
    (an evaluation replaces the previous one in ``job.out``)."""
    from geoseg_batch.runtime import configure_tensorflow
    from geoseg_batch.training.evaluate import evaluate

    configure_tensorflow()
    ensure_replaceable(job.out, "evaluate")
    with Publication(job.out, overwrite=True) as publication:
        result = evaluate(job, publication.stage)
        summary = {k: result.metrics[k] for k in ("accuracy", "precision", "recall", "f1", "iou")}
        plots = [(p.stem.replace("_", " "), p) for p in sorted(publication.stage.glob("*.png"))]
        write_report(publication.stage, f"evaluate: {job.name}", summary, resolved(job), plots)
        manifest = publication.write_manifest(command="evaluate", outputs=result.outputs, summary=result.summary,
                                              config=resolved(job), inputs=result.inputs)
    return JobResult("evaluate", result.out, manifest, [{"metrics": str(result.metrics_path)}], summary)
