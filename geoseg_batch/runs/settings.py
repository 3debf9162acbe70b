"""Content keys of jobs: what makes a job's results what they are, apart from where it writes and runs."""

from __future__ import annotations

from typing import Any

from geoseg_batch.config import MosaicJob, PredictJob, resolved

NOT_CONTENT = ("wait", "wait_timeout_s", "strict", "dry_run", "cluster", "stac_api", "stac_collection")
"""How a job waits for another run writing to its out, whether it refuses implausible scenes, whether it only
plans, where it runs (workers, threads, memory, time-outs) and where its STAC Items are posted (the static collection is
rewritten on every publish): no part of what its results are (exact and blend outputs are bitwise the same
on any cluster), so changing them keeps a run's resume and an incremental run's reuse."""


def job_settings(job: PredictJob | MosaicJob, **inputs: Any) -> dict[str, Any]:
    """The job's resolved config less ``inputs`` (keyed by content elsewhere), where it writes and
    :data:`NOT_CONTENT`: the settings its content keys are made from."""
    settings = resolved(job.model_copy(update={**inputs, "out": ".", "name": "", "overwrite": False}))
    for key in NOT_CONTENT:
        settings.pop(key, None)
    if settings.get("stac", "given") is None:  # keys of jobs without a stac: section stay what they were before it
        settings.pop("stac")
    return settings
