"""predict on an external cluster that shares no disk with the client: the inputs and outputs only in object storage.

`dask scheduler` and two `dask worker` processes run on 127.0.0.1, each in a fresh directory of its own
(its cwd and its TMPDIR, so its scratch space and spill go there); the scene and the model bundle are on
the loopback S3 server only, and so are the results; the workers get the AWS credentials from their environment and the endpoint
from the job (``--endpoint-url``), never from their environment. The results must equal, bitwise, those
of the embedded local cluster with the bundle as a local file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr

from geoseg_batch.cli import main
from geoseg_batch.io.object_storage import current_version
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import ObjectPath

from tests.helpers import SHARED_DATA, make_bundle, write_scene

DASK = Path(sys.executable).with_name("dask")
REPO = Path(__file__).resolve().parents[2]
RGB = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class IsolatedCluster:
    """The scheduler's address and the directory (cwd and TMPDIR) of each process: scheduler, worker0, worker1."""

    address: str
    homes: dict[str, Path]


def _isolated_environment(home: Path) -> dict[str, str]:
    """A process's environment: this one's (the AWS credentials included), but its own TMPDIR, no endpoint
    (the job names it), and this checkout importable from any cwd."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return {**env, "TMPDIR": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}


def _stopped(processes: list[subprocess.Popen]) -> None:
    """Stop ``processes`` (each its own process group): SIGTERM, then SIGKILL for any still running after 20 s."""
    for process in processes[::-1]:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def isolated_cluster(s3_server, tmp_path_factory) -> Iterator[IsolatedCluster]:
    """A scheduler and two workers on 127.0.0.1, each started in (cwd, TMPDIR) a fresh directory of its own."""
    from distributed import Client

    if not DASK.exists():
        pytest.skip("the dask command-line tool is not installed")
    homes = {name: tmp_path_factory.mktemp(f"isolated-{name}") for name in ("scheduler", "worker0", "worker1")}
    address = f"tcp://127.0.0.1:{_free_port()}"
    commands = {"scheduler": [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                              "--dashboard-address", "127.0.0.1:0"]}
    for n in range(2):
        commands[f"worker{n}"] = [str(DASK), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                  "--no-dashboard", "--name", f"isolated-{n}"]
    processes = []
    try:
        for name, command in commands.items():
            home = homes[name]
            processes.append(subprocess.Popen(command, cwd=home, env=_isolated_environment(home),
                                              stdout=open(home / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                              start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield IsolatedCluster(address, homes)
    finally:
        _stopped(processes)


def _options(location: str, endpoint: str) -> dict:
    """fsspec's storage options for ``location``: the S3 server's for a URL, none for a local path."""
    from geoseg_batch.io.remote import CloudSettings
    from geoseg_batch.io.urls import is_url

    return CloudSettings(endpoint_url=endpoint).storage_options() if is_url(location) else {}


def _arrays(store: str, endpoint: str) -> dict[str, np.ndarray]:
    """The arrays of the zarr store at ``store`` (a local path or an s3:// URL)."""
    group = zarr.open_group(store, mode="r", storage_options=_options(store, endpoint) or None)
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def _manifest(out: str, endpoint: str) -> dict:
    """The manifest of the output at ``out`` (a local path or an s3:// URL)."""
    import fsspec

    with fsspec.open(f"{out}/manifest.json", "r", **_options(out, endpoint)) as handle:
        return json.load(handle)


def _tree(root: Path) -> set[str]:
    """Every path under ``root``, relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _worker_places(address: str) -> dict[str, tuple[str, str, str]]:
    """{worker: (cwd, TMPDIR as Python sees it, Dask's local directory)} of the cluster's workers."""
    from distributed import Client

    def places(dask_worker) -> tuple[str, str, str]:
        return os.getcwd(), tempfile.gettempdir(), str(dask_worker.local_directory)

    with Client(address, timeout=30) as client:
        return client.run(places)


def _model_origins(address: str) -> set[str]:
    """What each worker's model plugins read their bundle from ("url", "bytes", "path")."""
    from distributed import Client

    def origins(dask_worker) -> list[str]:
        return [getattr(p, "origin", "") for n, p in dask_worker.plugins.items() if n.startswith("geoseg-model-")]

    with Client(address, timeout=30) as client:
        return {o for found in client.run(origins).values() for o in found}


@pytest.mark.cluster
@pytest.mark.slow
def test_predict_on_workers_without_the_clients_disk(tmp_path, s3_server, isolated_cluster, monkeypatch):
    client_tmp = tmp_path / "client-tmp"  # the client's own TMPDIR for the test: no worker may write there
    client_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(client_tmp))
    inputs = tmp_path / "inputs"  # made here, uploaded, then deleted: the inputs exist only on the S3 server
    inputs.mkdir()
    scene_file = RGB if RGB.exists() else write_scene(inputs / "RGB.byte.tif", (718, 791), bands=3)
    scene = s3_server.upload(scene_file, "isolated/RGB.byte.tif")
    bundle_file = make_bundle(inputs / "m.keras", bands=3)
    bundle_size = bundle_file.stat().st_size
    bundle = s3_server.upload(bundle_file, "isolated/m.keras")
    for path in inputs.iterdir():
        path.unlink()
    results = tmp_path / "results"
    out = f"s3://{s3_server.bucket}/isolated/out"  # the outputs too exist only on the S3 server
    served_before = s3_server.served("isolated/m.keras")
    client_files = _tree(tmp_path)
    common = ["--quiet", "predict", scene, "--model", bundle, "--endpoint-url", s3_server.endpoint, "--tile", "256",
              "--no-cog"]
    assert main([*common, "--out", out, "--scheduler", isolated_cluster.address]) == 0

    assert _model_origins(isolated_cluster.address) == {"url"}  # each worker fetched the bundle itself
    assert s3_server.served("isolated/m.keras") - served_before >= 2 * bundle_size
    places = _worker_places(isolated_cluster.address)
    homes = {str(isolated_cluster.homes[f"worker{n}"]) for n in range(2)}
    assert {cwd for cwd, _, _ in places.values()} == homes
    for cwd, tmp, scratch in places.values():  # spill and scratch files go to the worker's own directory
        assert tmp == cwd and Path(scratch).is_relative_to(cwd), (cwd, tmp, scratch)
    for home in homes:
        assert not list(Path(home).rglob("geoseg-bundle-*")), "the fetched bundle is removed once loaded"
    new = _tree(tmp_path) - client_files
    assert all(p.startswith(".geoseg-batch-logs") for p in new), \
        sorted(new)  # no worker wrote anything on the client's disk (the client only its log)
    assert not list(client_tmp.iterdir())

    version = str(current_version(ObjectPath(out), CloudSettings(endpoint_url=s3_server.endpoint)))
    assert version.startswith(f"{out}/versions/"), "published through the pointer"
    manifest = _manifest(version, s3_server.endpoint)
    assert manifest["config"]["model"] == bundle and manifest["checksums"][bundle].startswith("etag:")

    local, copy = results / "local", inputs / "m.keras"  # the reference: the embedded cluster, the bundle a file
    s3_server.client().download_file(s3_server.bucket, "isolated/m.keras", str(copy))
    common[common.index(bundle)] = str(copy)
    assert main([*common, "--out", str(local), "--workers", "1"]) == 0
    expected = _arrays(str(local / "RGB.byte.zarr"), s3_server.endpoint)
    got = _arrays(f"{version}/RGB.byte.zarr", s3_server.endpoint)
    assert expected.keys() == got.keys() and {"mask", "probabilities"} <= set(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.cluster
@pytest.mark.slow
def test_a_local_bundle_travels_to_the_workers_as_bytes(tmp_path, s3_server, isolated_cluster):
    scene = s3_server.upload(write_scene(tmp_path / "small.tif", (96, 80), bands=3), "isolated/small.tif")
    bundle = make_bundle(tmp_path / "local.keras", bands=3, seed=3)
    out = tmp_path / "out"
    assert main(["--quiet", "predict", scene, "--model", str(bundle), "--endpoint-url", s3_server.endpoint,
                 "--tile", "64", "--no-cog", "--out", str(out), "--scheduler", isolated_cluster.address]) == 0
    assert "bytes" in _model_origins(isolated_cluster.address)  # not read from the client's path
    assert _arrays(str(out / "small.zarr"), s3_server.endpoint)["mask"].shape == (96, 80)
