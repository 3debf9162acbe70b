"""Job specifications: one typed schema shared by YAML jobs, the CLI and the Python API.

A job is a mapping with a ``kind`` (train, evaluate, predict, mosaic, pipeline, demo) validated by the matching
pydantic model here (``extra="forbid"``, frozen); :mod:`geoseg_batch.jobfile` reads and validates it (YAML,
overrides, one-line errors) and :mod:`geoseg_batch.options` derives the CLI's flags and the Python API's
keywords from these models' fields, so all three agree by construction.
Relative paths are taken relative to the current directory, as on the command line.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelType = Literal["unet", "attention_unet"]
LossName = Literal["dice", "bce_dice", "focal_tversky"]
SplitName = Literal["all", "train", "val", "test"]
StitchMode = Literal["exact", "blend"]
Precision = Literal["float32", "bfloat16"]
PRECISION_HELP = ("the forward pass' compute precision: bfloat16 runs about 2-3x faster on CPUs with AVX512-BF16/AMX "
                  "and on GPUs, with probabilities a few hundredths off float32's")
WAIT_HELP = ("when another run is writing to out, wait for it (at most wait_timeout_s) instead of refusing; "
             "if it published this job's results (same settings and inputs), do nothing")
OUT_HELP = ("output directory, or a prefix in object storage (s3://bucket/prefix: versions behind the pointer "
            "object current.json)")
WAIT_TIMEOUT_HELP = "how long wait waits for the run writing to out"
ResamplingMethod = Literal["nearest", "bilinear", "cubic", "lanczos", "average"]  # GDAL warp kernels


class Spec(BaseModel):
    """Base of every spec: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
"""The schemes of Dask's comms (distributed.comm.registry's backends)."""


class ClusterSpec(Spec):
    """Where Dask work runs: an existing scheduler, or an embedded LocalCluster."""

    scheduler: str | None = Field(None, description="address of an existing scheduler, e.g. tcp://host:8786",
                                  json_schema_extra={"metavar": "ADDR", "exclusive": "target"})
    workers: int | None = Field(None, ge=1, description="embedded LocalCluster size (default: one per core)",
                                json_schema_extra={"metavar": "N", "exclusive": "target"})
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | None = Field(None, description="per worker, e.g. '4GiB'")
    timeout_s: float = Field(15.0, gt=0, description="how long to wait for a scheduler (connection and handshake)")
    no_worker_timeout_s: float = Field(60.0, gt=0, description="fail the run when the cluster has had no live "
                                                               "worker for this long (a re-run resumes)")
    gpus: int | None = Field(None, ge=0, description="embedded cluster: one worker per GPU (dask-cuda's "
                                                     "LocalCUDACluster, resources GPU=1); default: every visible "
                                                     "GPU when dask-cuda is installed, 0 for CPU only")
    train_workers: int | None = Field(None, ge=1, description="distributed training: workers of the cluster that "
                                                              "each run one training process (default: all)",
                                         json_schema_extra={"metavar": "N"})
    dashboard_address: str | None = Field(None, description="embedded cluster's dashboard host:port (default "
                                          "127.0.0.1:0, this machine only; ':8787' opens it to the network)")

    @field_validator("scheduler")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        """A scheduler address is [SCHEME://]HOST:PORT, SCHEME one Dask speaks (inproc:// addresses as they are)."""
        if value is None or value.startswith("inproc://"):
            return value
        scheme, _, location = value.rpartition("://")
        host, _, port = location.rpartition(":")
        reason = (f"unknown scheme {scheme!r}" if scheme and scheme not in SCHEDULER_SCHEMES else
                  "no host" if not host else None if port.isdigit() and int(port) <= 65535 else f"port {port!r}")
        if reason is not None:
            raise ValueError(f"{value!r} is not a scheduler address ({reason}); give tcp://HOST:PORT (what "
                             "`dask scheduler` prints), or drop --scheduler to use a local cluster")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ClusterSpec:
        if self.scheduler and self.workers:
            raise ValueError("give either scheduler (an existing cluster) or workers (a local one), not both")
        return self


class StorageSpec(Spec):
    """Object storage for s3:// locations: where it answers and how requests are signed.

    Holds no secrets: credentials come from the standard AWS chain (environment, profile,
    instance role) on each machine. Unset fields fall back to AWS_ENDPOINT_URL and AWS_REGION.
    """

    endpoint_url: str | None = Field(None, description="an S3-compatible endpoint, e.g. http://127.0.0.1:9000 "
                                                        "(default: AWS_ENDPOINT_URL, else AWS itself)",
                                     json_schema_extra={"metavar": "URL"})
    region: str | None = Field(None, description="the bucket's region (default: AWS_REGION)")
    profile: str | None = Field(None, description="a profile of ~/.aws/credentials to sign with")
    anonymous: bool = Field(False, description="unsigned requests, for public buckets")


class StacSpec(Spec):
    """Scenes found in a STAC catalog: a STAC API searched through pystac-client, or a static catalog,
    collection or ItemCollection file (a path or URL) whose Items are filtered the same way."""

    url: str | None = Field(None, description="a STAC API (its landing page URL) or a static catalog / collection / "
                                              "ItemCollection JSON (path or URL): scenes are its Items",
                            json_schema_extra={"name": "stac", "metavar": "URL"})
    collections: list[str] | None = Field(None, description="collection ids to search",
                                          json_schema_extra={"name": "collection", "metavar": "C,..."})
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="west, south, east, north in degrees (WGS 84)",
        json_schema_extra={"metavar": ["W", "S", "E", "N"]})
    datetime: str | None = Field(None, description="an instant or range, e.g. 2024-01-01/2024-06-30 or 2024-05-01/..",
                                 json_schema_extra={"metavar": "RANGE"})
    query: list[str] | None = Field(None, description="property filters (STAC query extension), e.g. "
                                                      "eo:cloud_cover<20", json_schema_extra={"metavar": "EXPR,..."})
    ids: list[str] | None = Field(None, description="only these Item ids", json_schema_extra={"name": "item_ids"})
    max_items: int | None = Field(None, ge=1, description="at most this many Items (a guard for broad searches)")
    assets: dict[str, str] | None = Field(None, description="the bundle's band names mapped to asset keys, e.g. "
                                                            "red=B04,green=B03 (default: matched through eo:bands "
                                                            "names and common names)",
                                          json_schema_extra={"metavar": "BAND=ASSET,..."})
    timeout_s: float = Field(30.0, gt=0, description="how long one request to the catalog may take",
                             json_schema_extra={"name": "stac_timeout_s", "metavar": "S"})

    @field_validator("assets", mode="before")
    @classmethod
    def _band_assets(cls, value: Any) -> Any:
        """``BAND=ASSET,...`` (the command line's spelling) as a mapping; a mapping as it is."""
        if not isinstance(value, str):
            return value
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if not pairs or any(not sep or not band.strip() or not asset.strip() for band, sep, asset in pairs):
            raise ValueError(f"got {value!r}; give BAND=ASSET pairs separated by commas, e.g. red=B04,green=B03")
        return {band.strip(): asset.strip() for band, _, asset in pairs}

    @model_validator(mode="after")
    def _a_catalog(self) -> StacSpec:
        if self.url is None:
            raise ValueError("stac: no url; give the STAC API or catalog to search (--stac URL)")
        return self


def _locations(value: Any) -> Any:
    """Paths and URLs as the strings a job holds (a URL must stay a string: Path folds s3:// into s3:/)."""
    if isinstance(value, (list, tuple)):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return str(value) if isinstance(value, Path) else value


def _local_directory(value: Any) -> Any:
    """``value`` unchanged unless it is a URL: this job's ``out`` is a local (or mounted) directory."""
    if isinstance(value, str) and "://" in value:
        raise ValueError(f"got {value!r}; this job writes to a local (or mounted) directory; predict and mosaic "
                         "write to object storage (s3://...): give a local path")
    return value


def _writable(value: str) -> str:
    """``value`` unchanged when results can be written there (a path, or an s3/gs/az URL naming a prefix)."""
    from geoseg_batch.io.urls import output_location

    output_location(value)
    return value


def _bundle_location(value: Any) -> Any:
    """A bundle's location as a job holds it: a URL as given, a path as pathlib spells it (``./m.keras`` is
    ``m.keras``: the spelling content keys were made from before URLs)."""
    from geoseg_batch.io.urls import is_url, location

    if not isinstance(value, (str, Path)):
        return value
    return location(value) if is_url(str(value)) or "://" in str(value) else str(Path(value))


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


class StoreOutputs(Spec):
    """What the jobs that write zarr stores and COGs into ``out`` (predict, mosaic) share: formats, and how
    they publish (overwrite; wait for another run writing there)."""

    zarr_format: Literal[2, 3] = 2
    cog: bool = Field(True, description="mask and probability COGs beside the zarr store (--no-cog: zarr only)")
    overwrite: bool = False
    wait: bool = Field(False, description=WAIT_HELP)
    wait_timeout_s: float = Field(3600.0, gt=0, description=WAIT_TIMEOUT_HELP, json_schema_extra={"metavar": "S"})
    storage: StorageSpec = StorageSpec()
    stac_api: str | None = Field(None, description="a STAC API with the Transactions extension: the results' STAC "
                                                   "Items are posted there too (beside the static collection in out)",
                                 json_schema_extra={"metavar": "URL"})
    stac_collection: str | None = Field(None, description="the id of the results' STAC collection (default: the "
                                                          "job's name)", json_schema_extra={"metavar": "ID"})


class PredictJob(StoreOutputs):
    """Segment scenes tile by tile on Dask; zarr + COGs per scene."""

    kind: Literal["predict"] = "predict"
    name: str = "predict"
    scenes: list[str] = Field(default_factory=list, description="scene files, URLs (s3://bucket/key) or glob "
                                                                "patterns (e.g. incoming/*.tif)",
                              json_schema_extra={"positional": True, "metavar": "SCENE"})
    scene_list: str | None = Field(None, description="a text file (or URL) of scene paths, one per line (relative "
                                                     "to it)", json_schema_extra={"metavar": "FILE"})
    stac: StacSpec | None = Field(None, description="scenes from a STAC catalog (its Items' assets)")
    model: str = Field(description="model bundle (.keras): a file or a URL (s3://bucket/m.keras)",
                       json_schema_extra={"metavar": "BUNDLE"})
    out: str = Field(description=OUT_HELP)
    stitch: StitchMode = Field("exact", description="exact: equals a whole-scene pass; blend: overlapping tiles "
                                                    "blended")
    tile: int | None = Field(None, ge=8, description="tile size in pixels, a multiple of the model's 2**depth "
                             "(default: auto, chosen while planning from the model's receptive field and the workers' "
                             "memory: the smallest tile from 512 up whose halo costs at most 1.45 model pixels per "
                             "output pixel (exact) or 1.25 (blend), made smaller if its tasks would not fit a worker)")
    overlap: int | None = Field(None, ge=0, description="blend overlap (default: half the receptive radius)")
    batch_size: int = Field(1, ge=1, description="tiles per forward pass (same-shape windows are stacked)")
    bands: list[str | int] | None = Field(None, description="bands by name or 1-based number, in the model's order")
    nodata: float | None = Field(None, description="nodata value when the file has none")
    resample: bool = Field(False, description="resample scenes to the bundle's training resolution before "
                                              "predicting; outputs are on that grid")
    resampling: ResamplingMethod = Field("bilinear", description="the resample kernel: match the one the training "
                                                                 "data was resampled with")
    precision: Precision = Field("float32", description=PRECISION_HELP)
    float_output: bool = Field(False, description="float32 probabilities instead of uint8 0..250",
                               json_schema_extra={"flag": "--float"})
    polygons: bool = Field(False, description="also a GeoPackage of the mask's regions (one feature per connected "
                                              "region, with its area and mean probability)")
    gpu: bool | None = Field(None, description="model tasks need resources GPU=1 (default: when a worker has one)")
    incremental: bool = Field(False, description="keep unchanged scenes' outputs from the last run; predict only "
                                                 "new or changed scenes; publish a new version of out atomically")
    strict: bool = Field(False, description="refuse scenes whose sampled values lie far outside the model's "
                                            "training statistics, or that are all nodata (default: a warning)")
    dry_run: bool = Field(False, description="plan the run without computing it: tiles, tasks, bytes per task "
                                             "against the workers' memory, graph size, estimated time; starts no "
                                             "cluster, reads no pixel, writes nothing")
    cluster: ClusterSpec = ClusterSpec()

    _scene_locations = field_validator("scenes", "scene_list", "out", mode="before")(_locations)
    _writable_out = field_validator("out")(_writable)
    _model_location = field_validator("model", mode="before")(_bundle_location)

    @model_validator(mode="after")
    def _some_scenes(self) -> PredictJob:
        if not self.scenes and self.scene_list is None and self.stac is None:
            raise ValueError("no scenes: give scenes (files or glob patterns), scene_list (a file of paths) or stac "
                             "(a STAC catalog to search)")
        return self

    @model_validator(mode="after")
    def _resampling_needs_resample(self) -> PredictJob:
        if self.resampling != "bilinear" and not self.resample:
            raise ValueError(f"resampling: got {self.resampling!r} without resample, where it has no effect; "
                             "add resample: true (--resample) or drop resampling")
        return self


MergeRule = Literal["max", "first", "mean"]


class MosaicJob(StoreOutputs):
    """Many scenes' predictions onto one target grid: zarr + COGs."""

    kind: Literal["mosaic"] = "mosaic"
    name: str = "mosaic"
    predictions: list[str] = Field(min_length=1, description="predict outputs (directories or s3:// prefixes) or "
                                                             "their zarr stores",
                                   json_schema_extra={"positional": True, "metavar": "PREDICTION_DIR"})
    out: str = Field(description=OUT_HELP)
    crs: str | None = Field(None, description="target CRS, e.g. EPSG:32633 (default: the first scene's)")
    resolution: float | None = Field(None, gt=0, description="pixel size in target CRS units (default: the finest)")
    bounds: tuple[float, float, float, float] | None = Field(
        None, description="left, bottom, right, top in target CRS units (default: the union of the scenes)",
        json_schema_extra={"metavar": ["LEFT", "BOTTOM", "RIGHT", "TOP"]})
    merge: MergeRule = Field("max", description="max: most confident scene; first: first scene given; "
                                                "mean: weighted by distance to each scene's edge")
    chunk: int = Field(512, ge=16, description="mosaic chunk (and COG block) size in pixels")
    incremental: bool = Field(False, description="rewrite only the chunks touched by scenes that are new, changed "
                                                 "or gone since the last run; publish atomically")
    cluster: ClusterSpec = ClusterSpec()

    _mosaic_locations = field_validator("predictions", "out", mode="before")(_locations)
    _writable_out = field_validator("out")(_writable)


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


def _shown(value: Path | str) -> str:
    """A location as an error names it: a URL as it is, a path resolved."""
    from geoseg_batch.io.urls import is_url

    return str(value) if is_url(value) else str(Path(value).resolve())


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


AnyJob = Union[TrainJob, EvaluateJob, PredictJob, MosaicJob, PipelineJob, DemoJob]
JOB_KINDS: dict[str, type[Spec]] = {"train": TrainJob, "evaluate": EvaluateJob, "predict": PredictJob,
                                    "mosaic": MosaicJob, "pipeline": PipelineJob, "demo": DemoJob}


def resolved(job: BaseModel) -> dict[str, Any]:
    """The job as plain JSON-ready data, defaults filled in (what manifests record)."""
    return job.model_dump(mode="json")
