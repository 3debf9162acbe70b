"""ScenePlan: the one place that knows a scene's output names and its manifest entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoseg_batch.runs.demo import binary_confusion
from geoseg_batch.runs.scenes import ScenePlan


def test_outputs_follow_the_job_options_in_manifest_order():
    plan = ScenePlan(Path("/data/s1.tif"), "s1", scene=None, grid=None, key="k")
    assert plan.outputs() == {"zarr": "s1.zarr", "mask_cog": "s1_mask.tif", "probability_cog": "s1_probabilities.tif"}
    bare = ScenePlan(Path("s1.tif"), "s1", None, None, with_cogs=False, with_polygons=True)
    assert bare.outputs() == {"zarr": "s1.zarr", "polygons": "s1_polygons.gpkg"}


def test_entry_names_the_scene_and_its_outputs_in_a_directory():
    plan = ScenePlan(Path("/data/s1.tif"), "s1", None, None, with_polygons=True)
    assert plan.entry(Path("/out")) == {"scene": "/data/s1.tif", "zarr": "/out/s1.zarr",
                                        "mask_cog": "/out/s1_mask.tif", "probability_cog": "/out/s1_probabilities.tif",
                                        "polygons": "/out/s1_polygons.gpkg"}


def test_binary_confusion_counts_valid_zero_one_pixels():
    truth = np.array([[0, 1, 1, 255], [1, 0, 2, 1]], dtype=np.uint8)
    predicted = np.array([[0, 1, 0, 1], [1, 1, 1, 255]], dtype=np.uint8)
    valid = (truth != 255) & (predicted != 255)
    assert binary_confusion(truth, predicted, valid).tolist() == [[1, 1], [1, 2]]


def test_where_and_how_a_job_runs_is_not_part_of_its_content_key():
    from geoseg_batch.config import MosaicJob, PredictJob
    from geoseg_batch.runs.settings import job_settings

    plain = PredictJob(scenes=[Path("s.tif")], model=Path("m.keras"), out=Path("a"))
    elsewhere = plain.model_copy(update={
        "out": Path("b"), "strict": True, "wait": True, "wait_timeout_s": 5.0, "overwrite": True,
        "cluster": plain.cluster.model_copy(update={"no_worker_timeout_s": 300.0, "memory_limit": "8GiB",
                                                    "threads_per_worker": 2, "timeout_s": 60.0})})
    assert job_settings(plain) == job_settings(elsewhere)
    assert job_settings(plain) != job_settings(plain.model_copy(update={"stitch": "blend"}))
    mosaic = MosaicJob(predictions=[Path("p")], out=Path("m"))
    assert "cluster" not in job_settings(mosaic) and job_settings(mosaic)["merge"] == "max"
