"""Reading a job file: overrides merged into sections left empty, a payload that is not a mapping."""

from __future__ import annotations

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
