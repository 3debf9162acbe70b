"""Job specifications: one typed schema shared by YAML jobs, the CLI and the Python API.

A job is a mapping with a ``kind`` (train, evaluate, demo) validated by the matching
pydantic model (``extra="forbid"``): unknown keys are rejected with their YAML path and
the closest valid key, wrong types and out-of-range values with what was received and
expected. The CLI builds the same mapping from its options (:func:`merge_overrides`) and
the Python API from keyword arguments, so all three agree by construction.
Relative paths are taken relative to the current directory, as on the command line.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from geoseg_batch.errors import ConfigError, MissingInputError

ModelType = Literal["unet", "attention_unet"]
LossName = Literal["dice", "bce_dice", "focal_tversky"]
SplitName = Literal["all", "train", "val", "test"]


class Spec(BaseModel):
    """Base of every spec: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(Spec):
    """Where Dask work runs: an existing scheduler, or an embedded LocalCluster."""

    scheduler: str | None = Field(None, description="address of an existing scheduler, e.g. tcp://host:8786")
    workers: int | None = Field(None, ge=1, description="embedded LocalCluster size (default: one per core)")
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | None = Field(None, description="per worker, e.g. '4GiB'")
    timeout_s: float = Field(15.0, gt=0, description="how long to wait for a scheduler")

    @model_validator(mode="after")
    def _one_target(self) -> ClusterSpec:
        if self.scheduler and self.workers:
            raise ValueError("give either scheduler (an existing cluster) or workers (a local one), not both")
        return self


class DataSpec(Spec):
    """Training data and its split into train/val/test (a stable hash of each chip id)."""

    path: Path
    fill_nan: float | None = Field(None, description="replace NaN/inf pixels with this value instead of failing")
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    split_seed: int = 0

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
    data: DataSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    sweep: SweepSpec | None = None
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
    model: Path
    data: Path
    out: Path
    split: SplitName = Field("all", description="'all' chips, or the bundle's own train/val/test split")
    fill_nan: float | None = None
    batch_size: int = Field(16, ge=1)
    samples: int = Field(8, ge=0, description="chips shown in samples.png")
    cluster: ClusterSpec = ClusterSpec()


class PredictJob(Spec):
    """Segment scenes tile by tile on Dask; zarr + COGs per scene."""

    kind: Literal["predict"] = "predict"
    name: str = "predict"
    scenes: list[Path] = Field(min_length=1)
    model: Path
    out: Path
    stitch: Literal["exact", "blend"] = "exact"
    tile: int = Field(512, ge=8, description="tile size in pixels (a multiple of the model's 2**depth)")
    overlap: int | None = Field(None, ge=0, description="blend overlap (default: half the receptive radius)")
    batch_size: int = Field(1, ge=1, description="tiles per forward pass (same-shape windows are stacked)")
    bands: list[str | int] | None = Field(None, description="bands by name or 1-based number, in the model's order")
    nodata: float | None = Field(None, description="nodata value when the file has none")
    float_output: bool = Field(False, description="float32 probabilities instead of uint8 0..250")
    zarr_format: Literal[2, 3] = 2
    cog: bool = True
    gpu: bool | None = Field(None, description="model tasks need resources GPU=1 (default: when a worker has one)")
    overwrite: bool = False
    cluster: ClusterSpec = ClusterSpec()


class DemoJob(Spec):
    """The main job on an embedded LocalCluster: synthetic chips -> shards -> train -> evaluate -> predict scenes."""

    kind: Literal["demo"] = "demo"
    name: str = "demo"
    out: Path = Path("demo_out")
    chips: int = Field(384, ge=16)
    size: int = Field(64, ge=16)
    bands: int = Field(14, ge=1)
    scenes: int = Field(2, ge=0)
    tile: int = Field(256, ge=8, description="predict tile size for the scenes")
    seed: int = 0
    model: ModelSpec = ModelSpec(depth=3, base_filters=8)
    train: TrainSpec = TrainSpec(epochs=8, batch_size=16, patience=4)
    cluster: ClusterSpec = ClusterSpec()


Job = Annotated[Union[TrainJob, EvaluateJob, PredictJob, DemoJob], Field(discriminator="kind")]
JOB_KINDS: dict[str, type[Spec]] = {"train": TrainJob, "evaluate": EvaluateJob, "predict": PredictJob, "demo": DemoJob}


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the spec reached by following ``loc`` from ``model``."""
    current: Any = model
    for key in loc:
        field = current.model_fields.get(key) if isinstance(key, str) and hasattr(current, "model_fields") else None
        if field is None:
            break
        annotation = field.annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            break
        current = nested[0]
    return list(current.model_fields) if hasattr(current, "model_fields") else []


def _describe(error: dict[str, Any], model: type[BaseModel], source: str) -> str:
    """One line for a pydantic error: where, what was received, what is expected, how to fix."""
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(valid)}"
        return f"{source}: {where}: unknown key; {hint}"
    if error["type"] == "missing":
        return f"{source}: {where}: required key is missing"
    received = error.get("input")
    text = repr(received) if not isinstance(received, dict) else "a mapping"
    return f"{source}: {where}: {error['msg']} (received {text})"


def parse_job(payload: dict[str, Any], source: str = "job") -> TrainJob | EvaluateJob | PredictJob | DemoJob:
    """Validate a job mapping; ConfigError with one line for the first problem."""
    if not isinstance(payload, dict):
        raise ConfigError(f"{source}: a job is a mapping with a 'kind' key, got {type(payload).__name__}")
    kind = payload.get("kind")
    if kind not in JOB_KINDS:
        close = difflib.get_close_matches(str(kind), list(JOB_KINDS), n=1)
        hint = f" did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{source}: kind: {kind!r} is not a job kind; expected one of {list(JOB_KINDS)}.{hint}")
    model = JOB_KINDS[kind]
    try:
        return TypeAdapter(model).validate_python(payload)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], model, source)) from None


def load_job(path: Path | str, overrides: dict[str, Any] | None = None) -> TrainJob | EvaluateJob | PredictJob | DemoJob:
    """Read, merge ``overrides`` into, and validate a YAML job file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such job file")
    try:
        payload = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_job(merge_overrides(payload, overrides or {}), source=str(path))


def merge_overrides(payload: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with dotted-key ``overrides`` (``{"train.epochs": 3}``) set; None values are skipped."""
    merged = _deep_copy(payload)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def resolved(job: BaseModel) -> dict[str, Any]:
    """The job as plain JSON-ready data, defaults filled in (what manifests record)."""
    return job.model_dump(mode="json")
