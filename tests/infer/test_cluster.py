"""Placement and fault tolerance of predict on real Dask clusters."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import numpy as np
import pytest
import xarray as xr

from geoseg_batch import predict_scene
from geoseg_batch.infer.segment import TASK_BLOCK

from tests.helpers import local_client, make_bundle, write_scene


def _name(key) -> str:
    return key if isinstance(key, str) else str(key[0])


@pytest.mark.cluster
def test_model_tasks_run_only_on_the_gpu_worker(tmp_path):
    """Two workers, only one advertises GPU=1: every model task (which also writes zarr) runs there."""
    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (300, 260))
    workers = {
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "cpu": {"cls": Worker, "options": {"nthreads": 1}},
    }
    with SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": None}}, workers=workers) as cluster, \
            Client(cluster) as client:
        gpu_address = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU"))
        for stitch in ("exact", "blend"):
            with get_task_stream(client=client) as stream:
                result = predict_scene(scene, bundle, tmp_path / stitch, tile=64, stitch=stitch, client=client)
            model_tasks = [t for t in stream.data if _name(t["key"]).startswith("predict-")]
            assert result.summary["tiles_total"] == 25
            assert len(model_tasks) == math.ceil(5 / TASK_BLOCK[0]) * math.ceil(5 / TASK_BLOCK[1])  # one per block
            assert {t["worker"] for t in model_tasks} == {gpu_address}, stitch
            others = {t["worker"] for t in stream.data if not _name(t["key"]).startswith("predict-")}
            assert len(others) >= 1  # reading, blending and COG tasks are free to run anywhere


@pytest.mark.cluster
@pytest.mark.slow
def test_killed_worker_process_does_not_change_the_output(tmp_path):
    bundle = make_bundle(tmp_path / "m.keras", base_filters=8)
    scene = write_scene(tmp_path / "scene.tif", (1024, 1024))
    with local_client(2, processes=True) as client:
        predict_scene(scene, bundle, tmp_path / "clean", tile=64, float_output=True, cog=False, client=client)
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        started = threading.Event()

        def kill_when_busy() -> None:
            started.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # kill once some tiles are done and many remain
                if list(tmp_path.glob(".killed.staging-*/scene.zarr/mask/*")):  # some tiles written
                    break
                time.sleep(0.05)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        started.set()
        result = predict_scene(scene, bundle, tmp_path / "killed", tile=64, float_output=True, cog=False,
                               client=client)
        killer.join()
        assert victim not in client.run(os.getpid).values(), "the worker was not killed during the run"
    assert result.summary["tiles_computed"] == result.summary["tiles_total"] == 256
    clean = xr.open_zarr(tmp_path / "clean" / "scene.zarr")
    killed = xr.open_zarr(tmp_path / "killed" / "scene.zarr")
    np.testing.assert_array_equal(killed["probabilities"].values, clean["probabilities"].values)
    np.testing.assert_array_equal(killed["mask"].values, clean["mask"].values)


@pytest.mark.cluster
def test_workers_are_forked_from_the_server_started_before_the_cluster():
    """start_worker_fork_server (predict calls it before planning) starts the fork server with the model's imports;
    the embedded cluster started later forks its workers from that very server, TensorFlow already imported."""
    import multiprocessing.forkserver
    import sys

    from geoseg_batch.cluster import MODEL_WORKER_IMPORTS, connect, start_worker_fork_server
    from geoseg_batch.config import ClusterSpec

    spec = ClusterSpec(workers=1)
    assert start_worker_fork_server(spec)
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    assert server is not None
    with connect(spec, MODEL_WORKER_IMPORTS) as client:
        assert set(client.run(os.getppid).values()) == {server}
        assert all(client.run(lambda: "keras" in sys.modules).values())
    assert not start_worker_fork_server(ClusterSpec(scheduler="tcp://127.0.0.1:1"))  # nothing to fork for
