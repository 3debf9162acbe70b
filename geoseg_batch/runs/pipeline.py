"""run_pipeline: a job's steps in order on one cluster, and a record of the run in ``out/history/``."""

from __future__ import annotations

import contextlib
import importlib
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoseg_batch.config import AnyJob, PipelineJob, resolved
from geoseg_batch.io.publication import Publication
from geoseg_batch.io.publish import json_text
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.storage import storage_for
from geoseg_batch.io.urls import output_location
from geoseg_batch.runs.result import JobResult

log = logging.getLogger(__name__)


def run_pipeline(job: PipelineJob, client: Any | None = None) -> JobResult:
    """Run the steps in order on one cluster; a record of the run is added to ``out/history/`` (a directory,
    or a prefix in object storage written with the job's ``storage:`` settings). Returns the pipeline's result."""
    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, connect
    from geoseg_batch.report import write_run_report

    started = time.perf_counter()
    out = output_location(job.out)
    storage = storage_for(out, CloudSettings.of(job.storage))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    steps: list[dict[str, Any]] = []
    with (connect(job.cluster, MODEL_WORKER_IMPORTS) if client is None else contextlib.nullcontext(client)) as active:
        for number, step in enumerate(job.steps):
            log.info("pipeline %s: step %d/%d: %s %s", job.name, number + 1, len(job.steps), step.kind, step.name)
            result = step_runner(step.kind)(step, active)
            steps.append({"kind": step.kind, "name": step.name, "out": str(result.out),
                          "manifest": str(result.manifest), "summary": result.summary})
    summary = {"steps": len(steps), "wall_s": round(time.perf_counter() - started, 3), "started": stamp,
               "step_summaries": [s["summary"] for s in steps]}
    with (Publication(out, direct=True, storage=storage) as publication,  # each step published its own results
          tempfile.TemporaryDirectory(prefix="geoseg-pipeline-") as scratch):
        history = storage.write_text(out / "history" / f"{stamp}-{time.time_ns() % 10**9:09d}.json",
                                     json_text({"job": job.name, "steps": steps, "summary": summary}))
        outputs = [{"kind": s["kind"], "out": s["out"], "manifest": s["manifest"]} for s in steps]
        quicklooks = [(f"{s['name']}: {p.stem.replace('_', ' ')}", p)
                      for step, s in zip(job.steps, steps) for p in _report_images(step, s["manifest"], Path(scratch))]
        with publication.local_copy("report.html") as page:
            write_run_report(page, f"pipeline: {job.name}", {**summary, "history": str(history)}, resolved(job),
                             quicklooks)
        manifest = publication.write_manifest(command="pipeline", outputs=outputs,
                                              summary={**summary, "history": str(history)}, config=resolved(job),
                                              inputs={})
    return JobResult("pipeline", out, manifest, outputs, summary)


def _report_images(step: AnyJob, manifest: str, scratch: Path) -> list[Path]:
    """The PNGs of the run report beside a step's published ``manifest``, sorted: local files, or (object storage)
    copies downloaded into ``scratch``."""
    where = output_location(manifest).parent / "report"
    if isinstance(where, Path):
        return sorted(where.glob("*.png"))
    storage = storage_for(where, CloudSettings.of(getattr(step, "storage", None)))
    images = []
    for found in (p for p in storage.list(where) if p.name.endswith(".png")):
        local = scratch / f"{len(list(scratch.iterdir()))}" / found.name
        local.parent.mkdir()
        local.write_bytes(storage.read_bytes(found))
        images.append(local)
    return images


def step_runner(kind: str) -> Callable[[AnyJob, Any], JobResult]:
    """The runner of job kind ``kind`` (``run_<kind>`` of :mod:`geoseg_batch.runs.<kind>`), looked up when a
    step runs, so that this module needs no import of the package that lists it."""
    return getattr(importlib.import_module(f"geoseg_batch.runs.{kind}"), f"run_{kind}")
