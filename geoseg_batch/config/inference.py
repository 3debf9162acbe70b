"""The specifications of the jobs that write zarr stores and COGs: predict (scenes tile by tile) and mosaic (many
scenes' predictions onto one grid), and what they share (:class:`StoreOutputs`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from geoseg_batch.config.places import ClusterSpec, StacSpec, StorageSpec
from geoseg_batch.config.spec import (OUT_HELP, PRECISION_HELP, WAIT_HELP, WAIT_TIMEOUT_HELP, Precision,
                                      ResamplingMethod, Spec, StitchMode, _bundle_location, _locations, _writable)

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
