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
