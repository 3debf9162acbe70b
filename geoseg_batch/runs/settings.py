"""Content keys of jobs: what makes a job's results what they are, apart from where it writes and runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoseg_batch.config import MosaicJob, PredictJob, resolved


def job_settings(job: PredictJob | MosaicJob, **inputs: Any) -> dict[str, Any]:
    """The job's resolved config less ``inputs`` (keyed by content elsewhere), where it writes and where it
    runs: the settings its content keys are made from."""
    where = {"out": Path("."), "name": "", "overwrite": False, **({"strict": False} if isinstance(job, PredictJob) else {}),
             "cluster": job.cluster.model_copy(update={"scheduler": None, "workers": None})}
    return resolved(job.model_copy(update={**inputs, **where}))
