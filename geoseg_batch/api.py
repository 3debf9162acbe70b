"""The public Python API: one function per CLI command, same arguments, same results.

Each function builds the same job the CLI would (:mod:`geoseg_batch.config`) and runs it
through :func:`geoseg_batch.runs.run_job`, returning a :class:`JobResult`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geoseg_batch.config import (
    AnyJob, ClusterSpec, EvaluateJob, MosaicJob, PipelineJob, PredictJob, TrainJob, load_job, merge_overrides,
    parse_job,
)
from geoseg_batch.data.pack import PackResult
from geoseg_batch.data.stats import BandStats
from geoseg_batch.data.synthetic import SynthResult
from geoseg_batch.errors import MissingInputError
from geoseg_batch.runs import JobResult, run_job

__all__ = [
    "demo", "synth", "pack_shards", "shard_info", "shard_stats", "train", "evaluate", "predict_scene", "mosaic",
    "validate",
    "submit",
    "info", "JobResult",
]


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    from geoseg_batch.cluster import connect

    with connect(ClusterSpec(scheduler=scheduler, workers=workers)) as client:
        yield client


def demo(out: str | Path | None = None, scheduler: str | None = None, workers: int | None = None) -> JobResult:
    """The main job: synthetic chips -> shards (on Dask) -> train -> evaluate on the held-out split."""
    payload = merge_overrides({"kind": "demo"}, {"out": out, "cluster.scheduler": scheduler, "cluster.workers": workers})
    return run_job(parse_job(payload, source="demo"))


def synth(out: str | Path, chips: int = 200, bands: int = 14, size: int = 128, scenes: int = 2,
          seed: int = 0) -> SynthResult:
    """Synthetic Landslide4Sense chips under OUT/chips and georeferenced scenes under OUT/scenes."""
    from geoseg_batch.data.synthetic import synth as make

    return make(out, chips=chips, bands=bands, size=size, scenes=scenes, seed=seed)


def pack_shards(src: str | Path, out: str | Path, chips_per_shard: int = 256, fill_nan: float | None = None,
                compression: str = "blosc", overwrite: bool = False, scheduler: str | None = None,
                workers: int | None = None) -> PackResult:
    """Validate chips at ``src`` and pack them into HDF5 shards at ``out`` (with index.json and stats.json)."""
    from geoseg_batch.data.chips import open_chips
    from geoseg_batch.data.pack import pack_shards as pack

    open_chips(src, fill_nan=fill_nan)  # fail fast on structure before starting a cluster
    with _client(scheduler, workers) as client:
        return pack(src, out, chips_per_shard=chips_per_shard, fill_nan=fill_nan, compression=compression,
                    overwrite=overwrite, client=client)


def shard_info(path: str | Path) -> dict[str, Any]:
    """Index of a shard directory or file: chips, shards, bands, chip shape, compression, size."""
    from geoseg_batch.data.shards import shard_summary

    return shard_summary(path)


def shard_stats(path: str | Path, scheduler: str | None = None, workers: int | None = None) -> BandStats:
    """Per-band statistics of shards, computed with Dask and saved as stats.json beside them."""
    from geoseg_batch.data.chips import open_chips
    from geoseg_batch.data.shards import STATS_NAME
    from geoseg_batch.data.stats import compute_stats
    from geoseg_batch.io.publish import write_json

    collection = open_chips(path)
    with _client(scheduler, workers) as client:
        stats = compute_stats(collection, client=client)
    root = collection.path if collection.path.is_dir() else collection.path.parent
    write_json(root / STATS_NAME, stats.to_dict())
    return stats


def train(job: str | Path | TrainJob | None = None, **overrides: Any) -> JobResult:
    """Train from a job (file, or TrainJob) and/or dotted overrides: ``train(data=..., out=..., **{"train.epochs": 3})``.

    Plain keyword names are accepted for the common options: data, out, model_type, depth,
    base_filters, epochs, batch_size, learning_rate, loss, patience, seed, fill_nan, input_size, resolution_m.
    """
    aliases = {"data": "data.path", "fill_nan": "data.fill_nan", "resolution_m": "data.resolution_m",
               "model_type": "model.model_type", "depth": "model.depth", "base_filters": "model.base_filters",
               "input_size": "model.input_size",
               "epochs": "train.epochs", "batch_size": "train.batch_size", "learning_rate": "train.learning_rate",
               "loss": "train.loss", "patience": "train.patience", "seed": "train.seed"}
    dotted = {aliases.get(k, k): (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()}
    if isinstance(job, TrainJob):
        spec = parse_job(merge_overrides(job.model_dump(mode="json"), dotted), source=job.name)
    elif job is not None:
        spec = load_job(job, dotted)
    else:
        spec = parse_job(merge_overrides({"kind": "train"}, dotted), source="train")
    return run_job(spec)


def evaluate(model: str | Path, data: str | Path, out: str | Path, split: str | None = None,
             batch_size: int | None = None, fill_nan: float | None = None, precision: str | None = None) -> JobResult:
    """Evaluate a bundle on chips: metrics.json, confusion matrix, PR curve, samples."""
    payload = merge_overrides({"kind": "evaluate"}, {"model": str(model), "data": str(data), "out": str(out),
                                                     "split": split, "batch_size": batch_size, "fill_nan": fill_nan,
                                                     "precision": precision})
    return run_job(parse_job(payload, source="evaluate"))


def predict_scene(scenes: str | Path | list[str | Path], model: str | Path, out: str | Path, *,
                  scene_list: str | Path | None = None, incremental: bool | None = None,
                  stitch: str | None = None, tile: int | None = None, overlap: int | None = None,
                  batch_size: int | None = None,
                  bands: list[str | int] | None = None, nodata: float | None = None, resample: bool | None = None,
                  resampling: str | None = None, precision: str | None = None, float_output: bool | None = None,
                  zarr_format: int | None = None, cog: bool | None = None, polygons: bool | None = None,
                  gpu: bool | None = None, overwrite: bool | None = None, scheduler: str | None = None,
                  workers: int | None = None, client: Any | None = None) -> JobResult:
    """Segment one or more scenes tile by tile on Dask: per scene a zarr store and mask/probability COGs.

    ``client``: an existing ``distributed.Client`` to run on (else ``scheduler``/``workers``
    select or start a cluster, as on the command line).
    """
    paths = [scenes] if isinstance(scenes, (str, Path)) else list(scenes)
    payload = merge_overrides({"kind": "predict"}, {
        "scenes": [str(p) for p in paths], "scene_list": None if scene_list is None else str(scene_list),
        "incremental": incremental, "model": str(model), "out": str(out), "stitch": stitch, "tile": tile,
        "overlap": overlap, "batch_size": batch_size, "bands": bands, "nodata": nodata, "resample": resample,
        "resampling": resampling, "precision": precision, "float_output": float_output,
        "zarr_format": zarr_format, "cog": cog, "polygons": polygons, "gpu": gpu, "overwrite": overwrite,
        "cluster.scheduler": scheduler, "cluster.workers": workers,
    })
    return run_job(parse_job(payload, source="predict"), client)


def mosaic(predictions: str | Path | list[str | Path], out: str | Path, *, crs: str | None = None,
           resolution: float | None = None, bounds: tuple[float, float, float, float] | None = None,
           merge: str | None = None, chunk: int | None = None, zarr_format: int | None = None,
           cog: bool | None = None, incremental: bool | None = None, overwrite: bool | None = None,
           scheduler: str | None = None, workers: int | None = None, client: Any | None = None) -> JobResult:
    """Reproject and merge predict outputs onto one grid: a zarr store and mask/probability COGs.

    ``predictions``: predict output directories (their manifest lists the scenes' stores).
    """
    paths = [predictions] if isinstance(predictions, (str, Path)) else list(predictions)
    payload = merge_overrides({"kind": "mosaic"}, {
        "predictions": [str(p) for p in paths], "out": str(out), "crs": crs, "resolution": resolution,
        "bounds": None if bounds is None else list(bounds), "merge": merge, "chunk": chunk,
        "zarr_format": zarr_format, "cog": cog, "incremental": incremental, "overwrite": overwrite,
        "cluster.scheduler": scheduler, "cluster.workers": workers,
    })
    return run_job(parse_job(payload, source="mosaic"), client)


def validate(job: str | Path) -> AnyJob:
    """Check a job file (schema and input paths) without touching a cluster; returns the parsed job."""
    spec = load_job(job)
    steps = spec.steps if isinstance(spec, PipelineJob) else [spec]
    produced: list[Path] = []  # a pipeline step may read what an earlier step writes
    for number, step in enumerate(steps):
        prefix = f"steps[{number}]." if isinstance(spec, PipelineJob) else ""
        try:
            inputs = _input_paths(step)
        except MissingInputError as exc:
            raise MissingInputError(f"{job}: {prefix}{exc}") from None
        for key, path in inputs:
            made_earlier = any(p == Path(path).resolve() or p in Path(path).resolve().parents for p in produced)
            if not made_earlier and not Path(path).exists():
                raise MissingInputError(f"{job}: {prefix}{key}: {path} does not exist")
        produced.append(Path(step.out).resolve())
    return spec


def _input_paths(spec: AnyJob) -> list[tuple[str, Path]]:
    from geoseg_batch.geo.scene import scene_paths

    if isinstance(spec, TrainJob):
        return [("data.path", spec.data.path)]
    if isinstance(spec, EvaluateJob):
        return [("model", spec.model), ("data", spec.data)]
    if isinstance(spec, PredictJob):
        return [("model", spec.model)] + [("scenes", p) for p in scene_paths(spec.scenes, spec.scene_list)]
    if isinstance(spec, MosaicJob):
        return [(f"predictions[{i}]", p) for i, p in enumerate(spec.predictions)]
    return []


def submit(job: str | Path, scheduler: str | None = None, workers: int | None = None) -> JobResult:
    """Run any job file (cluster options override its ``cluster:`` block)."""
    validate(job)
    return run_job(load_job(job, {"cluster.scheduler": scheduler, "cluster.workers": workers}))


def info(scheduler: str | None = None) -> dict[str, Any]:
    """Versions, devices, cores and thread settings; with ``scheduler``, whether it answers."""
    import rasterio

    from geoseg_batch.io.publish import versions
    from geoseg_batch.runtime import available_cores, configure_tensorflow

    intra, inter = configure_tensorflow()
    import keras
    import tensorflow as tf

    report: dict[str, Any] = {
        "versions": {**versions(), "tensorflow": tf.__version__, "keras": keras.__version__,
                     "gdal": rasterio.__gdal_version__},
        "keras_backend": keras.backend.backend(),
        "devices": [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()],
        "cores": available_cores(),
        "tf_threads": {"intra_op": intra, "inter_op": inter},
    }
    if scheduler:
        with _client(scheduler, None) as client:
            report["scheduler"] = {"address": scheduler, "workers": len(client.scheduler_info()["workers"])}
    return report
