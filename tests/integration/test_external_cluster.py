"""Jobs submitted to an existing Dask cluster: `dask scheduler` and two `dask worker` processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from geoseg_batch.cli import main
from tests.helpers import make_bundle, write_scene, stop_process_groups

DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """(scheduler address, worker addresses) of a real cluster of separate processes on 127.0.0.1."""
    from distributed import Client

    if not Path(DASK).exists() and shutil.which("dask") is None:
        pytest.skip("the dask command-line tool is not installed")
    logs = tmp_path_factory.mktemp("cluster-logs")
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                   "--dashboard-address", ":0"], stdout=open(logs / "scheduler.log", "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True, env=env)]
    for n in range(2):
        processes.append(subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--name", f"external-{n}"], stdout=open(logs / f"worker{n}.log", "w"),
                                          stderr=subprocess.STDOUT, start_new_session=True, env=env))
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            workers = sorted(client.scheduler_info()["workers"])
        yield address, workers
    finally:
        stop_process_groups(processes)


@pytest.mark.cluster
@pytest.mark.slow
def test_predict_and_mosaic_job_runs_on_the_external_workers(tmp_path, external_cluster):
    address, workers = external_cluster
    bundle = make_bundle(tmp_path / "m.keras")
    scenes = [write_scene(tmp_path / f"scene_{n}.tif", (160, 150), seed=n) for n in (1, 2)]
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "kind": "pipeline", "name": "external", "out": str(tmp_path / "runs"),
        "steps": [
            {"kind": "predict", "scenes": [str(s) for s in scenes], "model": str(bundle),
             "out": str(tmp_path / "predictions"), "tile": 64},
            {"kind": "mosaic", "predictions": [str(tmp_path / "predictions")], "out": str(tmp_path / "mosaic"),
             "chunk": 64},
        ],
    }))
    started = time.monotonic()
    assert main(["--quiet", "submit", str(job), "--scheduler", address]) == 0
    assert time.monotonic() - started < 240
    predicted = json.loads((tmp_path / "predictions" / "manifest.json").read_text())["summary"]
    assert set(predicted["tiles_per_worker"]) <= set(workers)
    assert sum(predicted["tiles_per_worker"].values()) == predicted["tiles_total"] == 2 * 9
    mosaic = json.loads((tmp_path / "mosaic" / "manifest.json").read_text())
    assert set(mosaic["summary"]["chunks_per_worker"]) <= set(workers)
    assert Path(mosaic["outputs"][0]["mask_cog"]).exists()
    history = list((tmp_path / "runs" / "history").glob("*.json"))
    assert len(history) == 1


@pytest.mark.cluster
@pytest.mark.slow
def test_distributed_training_runs_on_the_external_workers(tmp_path, external_cluster, shards_dir):
    address, workers = external_cluster
    out = tmp_path / "run"  # not about learning: the small shards (4 of 32x32 chips), a tiny model
    assert main(["--quiet", "train", "--data", str(shards_dir), "--out", str(out), "--epochs", "2",
                 "--depth", "2", "--base-filters", "4", "--batch-size", "16", "--scheduler", address,
                 "--train-workers", "2"]) == 0
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert [rank["worker"] for rank in summary["workers"]] == workers
    assert summary["workers"][0]["weights_sha256"] == summary["workers"][1]["weights_sha256"]
    assert summary["epochs"] == 2 and (out / "model.keras").exists()
