"""What a job returns (:class:`JobResult`), and the run report every job writes beside its results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class JobResult:
    """What a job produced: its outputs (as listed in its manifest) and summary figures."""

    kind: str
    out: Path
    manifest: Path
    outputs: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def write_report(out: Path, title: str, summary: dict[str, Any], config: dict[str, Any],
                 images: list[tuple[str, Path]], metrics: dict[str, Any] | None = None) -> Path:
    """Write ``out/report.html``, the job's run report (one self-contained file); returns its path."""
    from geoseg_batch.report import write_run_report

    return write_run_report(out / "report.html", title, summary, config, images, metrics=metrics)
