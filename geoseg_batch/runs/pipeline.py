"""run_pipeline: a job's steps in order on one cluster, and a record of the run in ``out/history/``."""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoseg_batch.config import AnyJob, PipelineJob, resolved
from geoseg_batch.io.publication import Publication
from geoseg_batch.io.publish import write_json
from geoseg_batch.runs.result import JobResult, write_report

log = logging.getLogger(__name__)


def run_pipeline(job: PipelineJob, client: Any | None = None) -> JobResult:
    """Run the steps in order on one cluster; a record of the run is added to ``out/history/``."""
    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, connect

    started = time.perf_counter()
    out = Path(job.out)
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
    with Publication(out, direct=True) as publication:  # each step published its own results
        history = write_json(out / "history" / f"{stamp}-{time.time_ns() % 10**9:09d}.json",
                             {"job": job.name, "steps": steps, "summary": summary})
        outputs = [{"kind": s["kind"], "out": s["out"], "manifest": s["manifest"]} for s in steps]
        quicklooks = [(f"{s['name']}: {p.stem.replace('_', ' ')}", p) for s in steps
                      for p in sorted(Path(s["out"], "report").glob("*.png"))]
        write_report(out, f"pipeline: {job.name}", {**summary, "history": str(history)}, resolved(job), quicklooks)
        manifest = publication.write_manifest(command="pipeline", outputs=outputs,
                                              summary={**summary, "history": str(history)}, config=resolved(job),
                                              inputs={})
    return JobResult("pipeline", out, manifest, outputs, summary)


def step_runner(kind: str) -> Callable[[AnyJob, Any], JobResult]:
    """The runner of job kind ``kind`` (``run_<kind>`` of :mod:`geoseg_batch.runs.<kind>`), looked up when a
    step runs, so that this module needs no import of the package that lists it."""
    return getattr(importlib.import_module(f"geoseg_batch.runs.{kind}"), f"run_{kind}")
