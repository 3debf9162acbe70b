"""The public Python API: one function per CLI command, same arguments, same results.

Each function builds the same job the CLI would (:mod:`geoseg_batch.config`) and runs it
through :func:`geoseg_batch.runs.run_job`, returning a :class:`JobResult`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geoseg_batch.config import (
    AnyJob, ClusterSpec, DemoJob, EvaluateJob, MosaicJob, PipelineJob, PredictJob, Spec, TrainJob,
)
from geoseg_batch.jobfile import load_job, merge_overrides, parse_job
from geoseg_batch.data.pack import PackResult
from geoseg_batch.data.stats import BandStats
from geoseg_batch.data.synthetic import SynthResult
from geoseg_batch.errors import ConfigError, MissingInputError
from geoseg_batch.io.urls import is_url, within
from geoseg_batch.options import job_options, section_defaults
from geoseg_batch.options import overrides as _overrides
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

    with connect(_cluster_spec(scheduler, workers)) as client:
        yield client


def _cluster_spec(scheduler: str | None, workers: int | None) -> ClusterSpec:
    """The cluster spec of ``--scheduler``/``--workers``; ConfigError (one line) for a bad value."""
    try:
        return ClusterSpec(scheduler=scheduler, workers=workers)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "cluster"
        raise ConfigError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from None


def _job(model: type[Spec], options: dict[str, Any], source: str, base: dict[str, Any] | None = None) -> AnyJob:
    """The job ``options`` (API keywords or dotted keys, see :mod:`geoseg_batch.options`) make, over ``base``."""
    dotted = _overrides(job_options(model), options, source)
    return parse_job(merge_overrides(base or {"kind": source, **section_defaults(model)}, dotted), source=source)


def _paths(value: str | Path | list[str | Path]) -> list[str | Path]:
    """One path or many, as a list."""
    return [value] if isinstance(value, (str, Path)) else list(value)


def demo(out: str | Path | None = None, **options: Any) -> JobResult:
    """The main job: synthetic chips -> shards (on Dask) -> train -> evaluate on the held-out split.

    ``options``: any DemoJob field by its keyword (``workers=2``, ``epochs=4``, ``scheduler=...``).
    """
    return run_job(_job(DemoJob, {"out": out, **options}, "demo"))


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

    if is_url(path):  # writing beside them would be an object-storage output, which this command does not make
        raise ConfigError(f"{path}: shards stats writes stats.json beside the shards, so it takes a local shard "
                          "directory; compute it there before uploading (train computes missing stats itself)")
    collection = open_chips(path)
    with _client(scheduler, workers) as client:
        stats = compute_stats(collection, client=client)
    write_json(Path(collection.root) / STATS_NAME, stats.to_dict())
    return stats


def train(job: str | Path | TrainJob | None = None, **overrides: Any) -> JobResult:
    """Train from a job (file, or TrainJob) and/or overrides; returns the run's JobResult.

    ``overrides``: any TrainJob field by its keyword (``data``, ``out``, ``epochs``, ``model_type``, ...,
    ``sweep_base_filters``: the ``geoseg-batch train`` flags' names) or by dotted key
    (``**{"train.epochs": 3}``); unknown keywords raise an OptionError naming the closest one.
    """
    if isinstance(job, TrainJob):
        return run_job(_job(TrainJob, overrides, job.name, base=job.model_dump(mode="json")))
    if job is not None:
        return run_job(load_job(job, _overrides(job_options(TrainJob), overrides, str(job))))
    return run_job(_job(TrainJob, overrides, "train"))


def evaluate(model: str | Path, data: str | Path, out: str | Path, **options: Any) -> JobResult:
    """Evaluate a bundle on chips (metrics.json, confusion matrix, PR curve, samples); returns the JobResult.

    ``options``: any EvaluateJob field by its keyword (``split``, ``batch_size``, ``fill_nan``, ``precision``, ...).
    """
    return run_job(_job(EvaluateJob, {"model": model, "data": data, "out": out, **options}, "evaluate"))


def predict_scene(scenes: str | Path | list[str | Path], model: str | Path, out: str | Path, *,
                  client: Any | None = None, **options: Any) -> JobResult:
    """Segment scenes tile by tile on Dask (per scene a zarr store and mask/probability COGs); returns the JobResult.

    ``options``: any PredictJob field by its keyword, as ``geoseg-batch predict`` spells its flags (``stitch``,
    ``tile``, ``bands``, ``resample``, ``float_output``, ``cog``, ``scheduler``, ``workers``, ...).
    ``client``: an existing ``distributed.Client`` to run on (else ``scheduler``/``workers``
    select or start a cluster, as on the command line).
    """
    job = _job(PredictJob, {"scenes": _paths(scenes), "model": model, "out": out, **options}, "predict")
    return run_job(job, client)


def predict_stac(stac: str | Path, model: str | Path, out: str | Path, *, client: Any | None = None,
                 **options: Any) -> JobResult:
    """Segment the scenes a STAC catalog holds: the Items a search of ``stac`` finds (a STAC API's landing page,
    or a static catalog / ItemCollection file), each Item's bands stacked from its assets; returns the JobResult.

    ``options``: the search (``collection``, ``bbox``, ``datetime``, ``query``, ``item_ids``, ``max_items``,
    ``assets``: band name -> asset key) and any other PredictJob field by its keyword, as for
    :func:`predict_scene`.
    """
    return predict_scene([], model, out, client=client, stac=str(stac), **options)


def mosaic(predictions: str | Path | list[str | Path], out: str | Path, *, client: Any | None = None,
           **options: Any) -> JobResult:
    """Reproject and merge predict outputs onto one grid (a zarr store and mask/probability COGs); returns the result.

    ``predictions``: predict outputs (directories, or ``s3://`` prefixes read through their pointer; their manifest
    lists the scenes' stores) or zarr stores; ``out`` a directory or an ``s3://`` prefix.
    ``options``: any MosaicJob field by its keyword (``crs``, ``resolution``, ``bounds``, ``merge``, ``chunk``, ...).
    """
    return run_job(_job(MosaicJob, {"predictions": _paths(predictions), "out": out, **options}, "mosaic"), client)


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
            if any(within(path, p) for p in produced):
                continue
            if is_url(path):  # asked of its store (one-line errors for missing, refused, unreachable)
                _require_object(path, step, f"{job}: {prefix}{key}: ")
            elif not Path(path).exists():
                raise MissingInputError(f"{job}: {prefix}{key}: {path} does not exist; fix the path (relative paths "
                                        "are taken from the current directory)")
        produced.append(step.out)
    return spec


def _require_object(url: Path | str, step: AnyJob, prefix: str) -> None:
    """Raise (MissingInputError, ConfigError) unless the object at ``url`` exists, asked with ``step``'s storage
    settings; the message starts with ``prefix``."""
    from geoseg_batch.errors import GeosegError
    from geoseg_batch.io.remote import CloudSettings, object_info, require_prefix
    from geoseg_batch.io.urls import READ_ONLY, protocol

    if protocol(url) in READ_ONLY:
        return
    cloud = CloudSettings.of(getattr(step, "storage", None))
    try:
        if isinstance(step, MosaicJob):  # a predict output prefix or a zarr store: a prefix holding objects
            require_prefix(str(url), cloud)
        else:
            object_info(str(url), cloud)
    except GeosegError as exc:
        raise type(exc)(f"{prefix}{exc}") from None


def _input_paths(spec: AnyJob) -> list[tuple[str, Path | str]]:
    """(key, path or URL) of every input ``spec`` reads."""
    from geoseg_batch.geo.scene import scene_paths
    from geoseg_batch.io.remote import CloudSettings

    if isinstance(spec, TrainJob) and is_url(spec.data.path):  # shards in object storage: each one listed
        from geoseg_batch.data.shards import remote_shards

        return [("data.path", url) for url in remote_shards(spec.data.path, CloudSettings.of(spec.storage))[0]]
    if isinstance(spec, TrainJob):
        return [("data.path", spec.data.path)]
    if isinstance(spec, EvaluateJob):
        return [("model", spec.model), ("data", spec.data)]
    if isinstance(spec, PredictJob):
        cloud = CloudSettings.of(spec.storage)
        return [("model", spec.model)] + [("scenes", p) for p in scene_paths(spec.scenes, spec.scene_list, cloud)]
    if isinstance(spec, MosaicJob):
        return [(f"predictions[{i}]", p) for i, p in enumerate(spec.predictions)]
    return []


def submit(job: str | Path, scheduler: str | None = None, workers: int | None = None) -> JobResult:
    """Run any job file (cluster options override its ``cluster:`` block)."""
    validate(job)
    return run_job(load_job(job, {"cluster.scheduler": scheduler, "cluster.workers": workers}))


def _backend_info(backend: str) -> dict[str, Any]:
    """What the Keras backend adds to :func:`info`: its versions, devices and (TensorFlow) thread pools."""
    import keras

    if backend == "jax":  # a machine may run inference without TensorFlow (KERAS_BACKEND=jax)
        import jax

        from geoseg_batch.runtime import configure_xla

        cache = configure_xla()
        return {"versions": {"jax": jax.__version__, "keras": keras.__version__},
                "devices": [f"{d.platform.upper()}:{d.id}" for d in jax.devices()],
                "jax_compilation_cache": str(cache) if cache else None}
    from geoseg_batch.runtime import configure_tensorflow

    intra, inter = configure_tensorflow()
    import tensorflow as tf

    return {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "devices": [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()],
            "tf_threads": {"intra_op": intra, "inter_op": inter}}


def info(scheduler: str | None = None) -> dict[str, Any]:
    """Versions, devices, cores and thread settings; with ``scheduler``, whether it answers."""
    import rasterio

    from geoseg_batch.io.publish import versions
    from geoseg_batch.runtime import available_cores, keras_backend

    report: dict[str, Any] = {"versions": {**versions(), "gdal": rasterio.__gdal_version__},
                              "keras_backend": keras_backend(), "cores": available_cores()}
    backend = _backend_info(report["keras_backend"])
    report["versions"].update(backend.pop("versions"))
    report.update(backend)
    if scheduler:
        with _client(scheduler, None) as client:
            report["scheduler"] = {"address": scheduler, "workers": len(client.scheduler_info()["workers"])}
    return report
