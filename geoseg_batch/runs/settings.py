"""Content keys of jobs: what makes a job's results what they are, apart from where it writes and runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoseg_batch.config import MosaicJob, PredictJob, resolved

WAITING = ("wait", "wait_timeout_s")
"""How a job waits for another run writing to its out: no part of what its results are."""


def job_settings(job: PredictJob | MosaicJob, **inputs: Any) -> dict[str, Any]:
    """The job's resolved config less ``inputs`` (keyed by content elsewhere), where it writes, how it waits
    for another run writing there, whether it refuses implausible scenes, and where it runs: the settings its
    content keys are made from."""
    where = {"out": Path("."), "name": "", "overwrite": False, **({"strict": False} if isinstance(job, PredictJob) else {}),
             "cluster": job.cluster.model_copy(update={"scheduler": None, "workers": None})}
    settings = resolved(job.model_copy(update={**inputs, **where}))
    for waiting in WAITING:  # not recorded at all: keys stay those of runs made before --wait existed
        settings.pop(waiting, None)
    return settings
