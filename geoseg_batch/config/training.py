"""The specifications of the jobs that train and evaluate models: data, architecture, optimization, sweeps; and
the demo, the main job on bundled synthetic data."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from geoseg_batch.config.places import ClusterSpec, StorageSpec
from geoseg_batch.config.spec import (PRECISION_HELP, LossName, ModelType, Precision, Spec, SplitName,
                                      _local_directory, _locations)

class DataSpec(Spec):
    """Training data and its split into train/val/test (a stable hash of each chip id)."""

    path: str = Field(description="Landslide4Sense directory or shard directory; shards also as a URL: a prefix "
                                  "(s3://bucket/shards), a shard or a glob of shards", json_schema_extra={"name": "data"})
    fill_nan: float | None = Field(None, description="replace NaN/inf pixels with this value instead of failing",
                                   json_schema_extra={"metavar": "V"})
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    split_seed: int = 0
    resolution_m: float | None = Field(None, gt=0, description="ground sampling distance of the chips in metres "
                                                              "(10 for Landslide4Sense); recorded in the bundle "
                                                              "for predict --resample",
                                         json_schema_extra={"metavar": "M"})

    _data_location = field_validator("path", mode="before")(_locations)

    @model_validator(mode="after")
    def _fractions(self) -> DataSpec:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves no training "
                "chips; keep their sum below 1"
            )
        return self


class ModelSpec(Spec):
    """Architecture and what the bundle promises to inference."""

    model_type: ModelType = "unet"
    depth: int = Field(4, ge=1, le=6)
    base_filters: int = Field(16, ge=1)
    batch_norm: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)
    classes: tuple[str, ...] = Field(("background", "landslide"), min_length=2)
    threshold: float = Field(0.5, gt=0, lt=1)
    input_size: int | None = Field(None, ge=8, description="resize chips to input_size x input_size")

    @model_validator(mode="after")
    def _input_size_fits(self) -> ModelSpec:
        if self.input_size is not None and self.input_size % 2**self.depth:
            raise ValueError(
                f"input_size {self.input_size} is not a multiple of 2**depth = {2**self.depth}; "
                "pick a multiple or change depth"
            )
        return self


class TrainSpec(Spec):
    """Optimization settings."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    loss: LossName = "bce_dice"
    patience: int = Field(5, ge=0, description="early stopping on val loss; 0 disables")
    augment: bool = True
    jitter: float = Field(0.05, ge=0)
    shuffle_buffer: int = Field(256, ge=1)
    seed: int = 0


class SweepSpec(Spec):
    """Grid search: every combination of the lists given (others keep the job's value)."""

    base_filters: list[int] | None = Field(None, min_length=1)
    learning_rate: list[float] | None = Field(None, min_length=1)
    batch_size: list[int] | None = Field(None, min_length=1)
    model_type: list[ModelType] | None = Field(None, min_length=1)


class TrainJob(Spec):
    """Train a model on chips; one run, or a sweep of runs."""

    kind: Literal["train"] = "train"
    name: str = "train"
    out: Path
    _local_out = field_validator("out", mode="before")(_local_directory)
    data: DataSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    sweep: SweepSpec | None = None
    storage: StorageSpec = StorageSpec()
    cluster: ClusterSpec = ClusterSpec()

    def runs(self) -> list[tuple[str, TrainJob]]:
        """(run id, job) of every sweep combination; one run, id '', without a sweep."""
        if self.sweep is None:
            return [("", self)]
        sweep = self.sweep
        axes = {
            "model_type": sweep.model_type or [self.model.model_type],
            "base_filters": sweep.base_filters or [self.model.base_filters],
            "learning_rate": sweep.learning_rate or [self.train.learning_rate],
            "batch_size": sweep.batch_size or [self.train.batch_size],
        }
        runs = []
        for model_type, filters, rate, batch in itertools.product(*axes.values()):
            run_id = f"{model_type}_f{filters}_lr{rate:g}_b{batch}"
            job = self.model_copy(update={
                "model": self.model.model_copy(update={"model_type": model_type, "base_filters": filters}),
                "train": self.train.model_copy(update={"learning_rate": rate, "batch_size": batch}),
                "sweep": None,
                "out": self.out / "runs" / run_id,
            })
            runs.append((run_id, job))
        return runs


class EvaluateJob(Spec):
    """Evaluate a bundle on chips."""

    kind: Literal["evaluate"] = "evaluate"
    name: str = "evaluate"
    model: Path = Field(description="model bundle (.keras)")
    data: Path = Field(description="Landslide4Sense directory or shard directory")
    out: Path
    _local_out = field_validator("out", mode="before")(_local_directory)
    split: SplitName = Field("all", description="'all' chips, or the bundle's own train/val/test split")
    fill_nan: float | None = Field(None, description="replace NaN/inf pixels with this value instead of failing",
                                   json_schema_extra={"metavar": "V"})
    batch_size: int = Field(16, ge=1)
    precision: Precision = Field("float32", description=PRECISION_HELP + "; evaluate both to see what it costs")
    samples: int = Field(8, ge=0, description="chips shown in samples.png")
    cluster: ClusterSpec = ClusterSpec()


class DemoJob(Spec):
    """The main job on an embedded LocalCluster: synthetic chips -> shards -> train -> evaluate -> predict scenes."""

    kind: Literal["demo"] = "demo"
    name: str = "demo"
    out: Path = Field(Path("demo_out"), description="output directory")
    _local_out = field_validator("out", mode="before")(_local_directory)
    chips: int = Field(384, ge=16)
    size: int = Field(64, ge=16)
    bands: int = Field(14, ge=1)
    scenes: int = Field(2, ge=0)
    tile: int = Field(256, ge=8, description="predict tile size for the scenes")
    seed: int = 0
    model: ModelSpec = ModelSpec(depth=3, base_filters=8)
    train: TrainSpec = TrainSpec(epochs=8, batch_size=16, patience=4)
    cluster: ClusterSpec = ClusterSpec()
