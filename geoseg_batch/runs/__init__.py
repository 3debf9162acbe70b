"""run_job(job) -> result: the one place that wires the stages together.

Each job kind has one module here, ``runs/<kind>.py`` with ``run_<kind>(job, client)``;
the CLI, the Python API and ``submit`` of a YAML job all end up in :func:`run_job`, and
every result carries the path of the ``manifest.json`` it wrote. Runners publish their
results through :class:`geoseg_batch.io.publication.Publication`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geoseg_batch.config import AnyJob
from geoseg_batch.runs.demo import run_demo
from geoseg_batch.runs.evaluate import run_evaluate
from geoseg_batch.runs.mosaic import run_mosaic
from geoseg_batch.runs.pipeline import run_pipeline
from geoseg_batch.runs.predict import run_predict
from geoseg_batch.runs.result import JobResult
from geoseg_batch.runs.train import run_train

__all__ = ["JobResult", "RUNNERS", "run_job", "run_train", "run_evaluate", "run_predict", "run_mosaic",
           "run_pipeline", "run_demo"]

RUNNERS: dict[str, Callable[[Any, Any | None], JobResult]] = {
    "train": run_train, "evaluate": run_evaluate, "predict": run_predict, "mosaic": run_mosaic,
    "pipeline": run_pipeline, "demo": run_demo,
}
"""{job kind: its runner}."""


def run_job(job: AnyJob, client: Any | None = None) -> JobResult:
    """Run any job kind; the job's result."""
    return RUNNERS[job.kind](job, client)
