"""The command line: exit codes, one-line errors, job validation, info, YAML and CLI agreeing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from geoseg_batch.cli import main
from geoseg_batch.jobfile import load_job


def _last_err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_validate_reports_unknown_key_with_suggestion(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f"kind: train\nout: x\ndata: {{path: {tmp_path}}}\nmodle: {{depth: 3}}\n")
    assert main(["validate", str(job)]) == 2
    assert _last_err(capsys) == f"geoseg-batch: error: {job}: modle: unknown key; did you mean model?"


@pytest.mark.parametrize("body, needle", [
    ("kind: train\nout: x\ndata: {path: .}\ntrain: {epochs: many}\n", "train.epochs: Input should be a valid integer"),
    ("kind: train\nout: x\n", "data: required key is missing"),
    ("kind: trian\n", "did you mean train?"),
    ("kind: train\nout: x\ndata: {path: .}\nmodel: {depth: 3, input_size: 100}\n", "not a multiple of 2**depth = 8"),
    ("kind: train\nout: x\ndata: {path: /no/such/dir}\n", "data.path: /no/such/dir does not exist"),
    ("kind: [\n", "not valid YAML"),
    ("kind: predict\nscenes: [/no/such/scene.tif]\nmodel: /etc/hostname\nout: p\n", "scenes: /no/such/scene.tif does not exist"),
    ("kind: predict\nscenes: ['/no/such/dir/*.tif']\nmodel: /etc/hostname\nout: p\n", "matches no files"),
    ("kind: pipeline\nout: h\nsteps:\n  - {kind: predict, scenes: [a.tif], modle: m, out: p}\n",
     "steps[0].modle: unknown key; did you mean model?"),
    ("kind: pipeline\nout: h\nsteps:\n  - {kind: predict, scenes: [a.tif], model: m, out: p, tile: big}\n",
     "steps[0].tile: Input should be a valid integer"),
    ("kind: pipeline\nout: h\nsteps:\n  - {kind: predict, scenes: [a.tif], model: m, out: p}\n"
     "  - {kind: mosaic, predictions: [p], out: p/mosaic}\n", "overlap; give each step its own output directory"),
    ("kind: mosaic\npredictions: [p]\nout: m\nmerge: median\n", "merge: Input should be 'max', 'first' or 'mean'"),
    ("kind: predict\nscenes: [/etc/hostname]\nmodel: /etc/hostname\nout: p\nresampling: cubic\n",
     "resampling: got 'cubic' without resample, where it has no effect; add resample: true (--resample)"),
])
def test_validate_bad_jobs(tmp_path, capsys, body, needle):
    job = tmp_path / "job.yaml"
    job.write_text(body)
    assert main(["validate", str(job)]) == 2
    line = _last_err(capsys)
    assert needle in line and str(job) in line


def test_unreachable_scheduler_is_one_line_after_a_bounded_wait(tmp_path, capsys):
    import time

    from tests.helpers import make_bundle, write_scene

    job = tmp_path / "job.yaml"
    scene, bundle = write_scene(tmp_path / "s.tif", (64, 64)), make_bundle(tmp_path / "m.keras")
    job.write_text(f"kind: predict\nscenes: [{scene}]\nmodel: {bundle}\nout: {tmp_path / 'p'}\n"
                   "cluster: {scheduler: 'tcp://127.0.0.1:9', timeout_s: 2}\n")
    started = time.monotonic()
    assert main(["submit", str(job)]) == 2
    line = _last_err(capsys)
    assert time.monotonic() - started < 30
    assert "tcp://127.0.0.1:9" in line and line.startswith("geoseg-batch: error:")
    assert not list(tmp_path.glob("*p*")), "nothing is left where results are published, not even staging"


def test_every_shipped_job_parses():
    from pathlib import Path

    jobs = sorted(Path(__file__).parents[1].joinpath("jobs").glob("*.yaml"))
    assert {j.name for j in jobs} >= {"demo.yaml", "train_landslide4sense.yaml", "predict_scene.yaml", "mosaic.yaml",
                                      "nightly_mosaic.yaml"}
    for path in jobs:
        assert load_job(path).kind in {"train", "evaluate", "predict", "mosaic", "pipeline", "demo"}


def test_cli_options_and_yaml_make_the_same_job(tmp_path, shards_dir):
    from geoseg_batch.cli import build_parser
    from geoseg_batch.config import TrainJob
    from geoseg_batch.jobfile import merge_overrides, parse_job
    from geoseg_batch.options import given, job_options, overrides

    args = build_parser().parse_args(["train", "--data", str(shards_dir), "--out", "o", "--epochs", "3",
                                      "--model-type", "attention_unet", "--base-filters", "8"])
    table = job_options(TrainJob)
    from_cli = parse_job(merge_overrides({"kind": "train"}, overrides(table, given(table, args), "train")))
    job = tmp_path / "job.yaml"
    job.write_text(f"kind: train\nout: o\ndata: {{path: {shards_dir}}}\ntrain: {{epochs: 3}}\n"
                   "model: {model_type: attention_unet, base_filters: 8}\n")
    assert load_job(job) == from_cli


def test_usage_error_is_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", "o"])
    assert exc.value.code == 2 and "needs a job file or --data" in _last_err(capsys)


def test_info_reports_versions_and_devices(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"tensorflow", "keras", "gdal", "dask"} <= set(info["versions"])
    assert any(d.startswith("CPU") for d in info["devices"])
    assert info["tf_threads"]["intra_op"] >= 1


def test_evaluate_with_wrong_bands_is_one_line(tiny_bundle, tmp_path, capsys):
    from geoseg_batch.data.synthetic import write_l4s_chips

    other = write_l4s_chips(tmp_path / "four", chips=2, bands=4, size=32)
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(other), "--out", str(tmp_path / "e")]) == 2
    assert "4 bands, but the model was trained on 14" in _last_err(capsys)
    assert not (tmp_path / "e").exists()


def test_evaluate_refuses_to_replace_unrelated_directory(tiny_bundle, shards_dir, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["evaluate", "--model", str(tiny_bundle), "--data", str(shards_dir), "--out", str(out)]) == 2
    assert "does not hold earlier `evaluate` results" in _last_err(capsys)
    assert (out / "notes.txt").read_text() == "keep"


def test_console_script_runs_in_a_fresh_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "geoseg_batch.cli", "validate", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"geoseg-batch: error: {tmp_path / 'missing.yaml'}: no such job file"
    assert "Traceback" not in done.stderr
