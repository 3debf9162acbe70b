"""What a job returns (:class:`JobResult`), and the run report every job writes beside its results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """What a job produced: its outputs (as listed in its manifest) and summary figures."""

    kind: str
    out: Path
    manifest: Path
    outputs: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def finished_result(kind: str, out: Any, manifest: dict[str, Any], manifest_path: Any) -> JobResult:
    """The result of a ``kind`` job whose results ``out`` already holds (``manifest``, at ``manifest_path``,
    recording the same run key): nothing was done; logged as such."""
    log.info("%s: %s already holds this job's results (same settings and inputs, published by the run waited "
             "for): nothing to do", kind, out)
    return JobResult(kind, out, manifest_path, manifest["outputs"], {**manifest["summary"], "already_done": True})


def write_report(out: Path, title: str, summary: dict[str, Any], config: dict[str, Any],
                 images: list[tuple[str, Path]], metrics: dict[str, Any] | None = None) -> Path:
    """Write ``out/report.html``, the job's run report (one self-contained file); returns its path."""
    from geoseg_batch.report import write_run_report

    return write_run_report(out / "report.html", title, summary, config, images, metrics=metrics)
