"""geoseg_batch: segment satellite and aerial scenes of any size with a U-Net, on a Dask cluster.

The public Python API mirrors the ``geoseg-batch`` command line, one function per command::

    import geoseg_batch as gb
    gb.synth("data", chips=200)
    gb.pack_shards("data/chips", "shards")
    result = gb.train(data="shards", out="run", epochs=10)
    gb.evaluate(model=result.outputs[0]["bundle"], data="shards", out="eval", split="test")
"""

from geoseg_batch.api import (
    JobResult, demo, evaluate, info, mosaic, pack_shards, predict_scene, predict_stac, shard_info, shard_stats, submit,
    synth, train, validate,
)
from geoseg_batch.config import DemoJob, EvaluateJob, MosaicJob, PipelineJob, PredictJob, TrainJob
from geoseg_batch.jobfile import load_job
from geoseg_batch.runs import run_job
from geoseg_batch.version import __version__

__all__ = [
    "__version__", "demo", "synth", "pack_shards", "shard_info", "shard_stats", "train", "evaluate", "predict_scene",
    "predict_stac", "mosaic", "validate", "submit", "info", "run_job", "load_job", "JobResult", "TrainJob",
    "EvaluateJob", "PredictJob", "MosaicJob", "PipelineJob", "DemoJob",
]
