"""Job specifications: one typed schema shared by YAML jobs, the CLI and the Python API.

A job is a mapping with a ``kind`` (train, evaluate, predict, mosaic, pipeline, demo) validated by the matching
pydantic model here (``extra="forbid"``, frozen); :mod:`geoseg_batch.jobfile` reads and validates it (YAML,
overrides, one-line errors) and :mod:`geoseg_batch.options` derives the CLI's flags and the Python API's
keywords from these models' fields, so all three agree by construction.
Relative paths are taken relative to the current directory, as on the command line.

The schema is split by concept: :mod:`~geoseg_batch.config.spec` (the base and shared types),
:mod:`~geoseg_batch.config.places` (cluster, storage, STAC), :mod:`~geoseg_batch.config.training` (train, evaluate,
demo) and :mod:`~geoseg_batch.config.inference` (predict, mosaic); the pipeline job and the registry of kinds are
here, and every public name is importable from here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from geoseg_batch.config.inference import MergeRule, MosaicJob, PredictJob, StoreOutputs
from geoseg_batch.config.places import SCHEDULER_SCHEMES, ClusterSpec, StacSpec, StorageSpec
from geoseg_batch.config.spec import (OUT_HELP, PRECISION_HELP, WAIT_HELP, WAIT_TIMEOUT_HELP, LossName, ModelType,
                                      Precision, ResamplingMethod, Spec, SplitName, StitchMode, _locations, _shown)
from geoseg_batch.config.training import (DataSpec, DemoJob, EvaluateJob, ModelSpec, SweepSpec, TrainJob,
                                          TrainSpec)

__all__ = ["AnyJob", "ClusterSpec", "DataSpec", "DemoJob", "EvaluateJob", "JOB_KINDS", "LossName", "MergeRule",
           "ModelSpec", "ModelType", "MosaicJob", "OUT_HELP", "PRECISION_HELP", "PipelineJob", "Precision",
           "PredictJob", "ResamplingMethod", "SCHEDULER_SCHEMES", "Spec", "SplitName", "StacSpec", "StepJob",
           "StitchMode", "StorageSpec", "StoreOutputs", "SweepSpec", "TrainJob", "TrainSpec", "WAIT_HELP",
           "WAIT_TIMEOUT_HELP", "resolved"]

StepJob = Annotated[Union[TrainJob, EvaluateJob, PredictJob, MosaicJob], Field(discriminator="kind")]


class PipelineJob(Spec):
    """Jobs run in order on one cluster (e.g. the nightly run: predict new scenes, then update the mosaic)."""

    kind: Literal["pipeline"] = "pipeline"
    name: str = "pipeline"
    out: str = Field(description="run history: one JSON record per run in out/history/ (a directory, or a prefix "
                                 "in object storage: s3://bucket/prefix)")
    steps: list[StepJob] = Field(min_length=1)
    storage: StorageSpec = StorageSpec()
    cluster: ClusterSpec = ClusterSpec()

    _history_location = field_validator("out", mode="before")(_locations)

    @model_validator(mode="after")
    def _outputs_apart(self) -> PipelineJob:
        """Steps write to their own locations (steps may live inside the pipeline's out, not in each other)."""
        from geoseg_batch.io.urls import within

        outs = [(f"steps[{n}].out", step.out) for n, step in enumerate(self.steps)]
        for i, (name_a, a) in enumerate(outs):
            for name_b, b in outs[i + 1:]:
                if within(a, b) or within(b, a):
                    raise ValueError(f"{name_a} ({_shown(a)}) and {name_b} ({_shown(b)}) overlap; give each step its "
                                     "own output directory")
        for name, step_out in outs:
            if within(self.out, step_out):
                raise ValueError(f"out ({_shown(self.out)}) is inside {name} ({_shown(step_out)}); keep the run "
                                 "history apart from what steps publish")
        return self


AnyJob = Union[TrainJob, EvaluateJob, PredictJob, MosaicJob, PipelineJob, DemoJob]
JOB_KINDS: dict[str, type[Spec]] = {"train": TrainJob, "evaluate": EvaluateJob, "predict": PredictJob,
                                    "mosaic": MosaicJob, "pipeline": PipelineJob, "demo": DemoJob}


def resolved(job: BaseModel) -> dict[str, Any]:
    """The job as plain JSON-ready data, defaults filled in (what manifests record)."""
    return job.model_dump(mode="json")
