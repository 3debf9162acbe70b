"""Reading a job file: overrides merged into sections left empty, a payload that is not a mapping."""

from __future__ import annotations

import re

import pytest

from geoseg_batch.errors import ConfigError
from geoseg_batch.jobfile import load_job, merge_overrides


def test_an_override_fills_a_section_left_empty_in_yaml(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("kind: mosaic\npredictions: [p]\nout: m\ncluster:\n")
    loaded = load_job(job, {"cluster.scheduler": "tcp://127.0.0.1:8786", "cluster.timeout_s": 3})
    assert loaded.cluster.scheduler == "tcp://127.0.0.1:8786" and loaded.cluster.timeout_s == 3
    assert merge_overrides({"train": None}, {"train.epochs": 2}) == {"train": {"epochs": 2}}


def test_a_job_that_is_not_a_mapping_is_one_line_even_with_overrides(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("- kind: predict\n")
    with pytest.raises(ConfigError, match="a job is a mapping with a 'kind' key, got list"):
        load_job(job, {"cluster.workers": 2})


PIPELINE = ("kind: pipeline\nout: {history}\nsteps:\n"
            "  - {{kind: predict, scenes: [s3://b/in/a.tif], model: m.keras, out: {predict}}}\n"
            "  - {{kind: mosaic, predictions: [{predict}], out: {mosaic}}}\n")


@pytest.mark.parametrize("history, predict, mosaic, overlap", [
    ("s3://b/night/history", "s3://b/night/pred", "s3://b/night/mosaic", None),
    ("s3://b/night/pred", "s3://b/night/pred", "local_mosaic", "out (s3://b/night/pred) is inside steps[0].out"),
    ("hist", "s3://b/night/pred", "s3://b/night/pred/m", "steps[0].out (s3://b/night/pred) and steps[1].out"),
    ("hist", "s3://b/night/pred", "s3://b/night/pred2", None),  # a shared key prefix is not containment
    ("s3://b/night/pred", "night/pred", "s3://b/night/m", None),  # a local path is not the URL of the same name
])
def test_pipeline_locations_apart_for_urls(tmp_path, monkeypatch, history, predict, mosaic, overlap):
    """Steps' outputs and the history compare as locations: URLs keep their ``//`` and keys (no Path folding)."""
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(PIPELINE.format(history=history, predict=predict, mosaic=mosaic))
    if overlap is None:
        loaded = load_job(job)
        assert loaded.out == history and loaded.steps[1].out == mosaic and loaded.steps[1].predictions == [predict]
    else:
        with pytest.raises(ConfigError, match=re.escape(overlap)):
            load_job(job)
