"""predict into s3:// on the loopback S3 server: results bitwise equal to a local run, published as a version
behind the pointer object, readable by rioxarray and by GDAL's command-line tools over /vsis3/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr

from geoseg_batch.cli import main
from geoseg_batch.io.object_storage import POINTER_NAME, current_version
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import ObjectPath

from tests.helpers import write_scene


def _arrays(store: str, options: dict | None = None) -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r", storage_options=options)
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def _gdal_env(s3) -> dict[str, str]:
    """The environment GDAL's command-line tools read the loopback server with."""
    return {**os.environ, "AWS_S3_ENDPOINT": s3.host_port, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def test_predict_s3_to_s3_equals_local(tmp_path, s3_env, bundle, scene_file):
    url = s3_env.upload(scene_file, "in/RGB.byte.tif")
    out = f"s3://{s3_env.bucket}/results/rgb"
    common = ["--model", str(bundle), "--tile", "256", "--workers", "1", "--polygons"]
    assert main(["predict", str(scene_file), "--out", str(tmp_path / "local"), *common]) == 0
    assert main(["predict", url, "--out", out, *common]) == 0
    cloud = CloudSettings.of()
    version = current_version(ObjectPath(out), cloud)
    assert version is not None and str(version).startswith(f"{out}/versions/")
    options = cloud.storage_options()
    expected, got = _arrays(str(tmp_path / "local" / "RGB.byte.zarr")), _arrays(f"{version}/RGB.byte.zarr", options)
    assert expected.keys() == got.keys() and {"mask", "probabilities"} <= set(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    fs = cloud.filesystem("s3")
    manifest = json.loads(fs.cat_file(f"{version.key}/manifest.json"))
    entry = manifest["outputs"][0]
    assert entry["zarr"] == f"{version}/RGB.byte.zarr" and entry["scene"] == url
    assert not fs.exists(f"{version.key}/.done"), "completion records are not published"
    assert json.loads(fs.cat_file(f"{s3_env.bucket}/results/rgb/manifest.json")) == manifest, "OUT/manifest.json"
    assert fs.exists(f"{version.key}/report.html") and fs.exists(f"{version.key}/state.json")
    assert fs.exists(f"{version.key}/RGB.byte_polygons.gpkg")
    assert not fs.exists(f"{s3_env.bucket}/results/rgb/.lease.json"), "the lease is released"
    CloudSettings.of().apply()
    for cog in ("RGB.byte_mask.tif", "RGB.byte_probabilities.tif"):
        with rasterio.open(tmp_path / "local" / cog) as a, rasterio.open(f"/vsis3/{version.key}/{cog}") as b:
            assert (a.crs, a.transform, a.shape, a.nodata) == (b.crs, b.transform, b.shape, b.nodata)
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=cog)
    _check_georeferencing(s3_env, version, scene_file, options)


def _check_georeferencing(s3, version: ObjectPath, scene_file: Path, options: dict) -> None:
    """The store's CRS and transform, read back through rioxarray and through gdalinfo over /vsis3/."""
    import rioxarray  # noqa: F401
    import xarray as xr

    with rasterio.open(scene_file) as src:
        crs, transform = src.crs, src.transform
    dataset = xr.open_zarr(f"{version}/RGB.byte.zarr", storage_options=options)
    assert dataset.rio.crs == crs and dataset.rio.transform().almost_equals(transform)
    if shutil.which("gdalinfo") is None:
        pytest.skip("gdalinfo (gdal-bin) is not installed")
    for name in (f'ZARR:"/vsis3/{version.key}/RGB.byte.zarr":/mask', f"/vsis3/{version.key}/RGB.byte_mask.tif"):
        info = json.loads(subprocess.run(["gdalinfo", "-json", name], env=_gdal_env(s3), check=True,
                                         capture_output=True, text=True, timeout=60).stdout)
        assert info["size"] == [scene_file_width(scene_file), scene_file_height(scene_file)], name
        np.testing.assert_allclose(info["geoTransform"], transform.to_gdal(), err_msg=name)
        assert "EPSG\",32618" in info["coordinateSystem"]["wkt"].replace(" ", "") or crs.to_epsg() is None or \
            str(crs.to_epsg()) in info["coordinateSystem"]["wkt"], name


def scene_file_width(path: Path) -> int:
    with rasterio.open(path) as src:
        return src.width


def scene_file_height(path: Path) -> int:
    with rasterio.open(path) as src:
        return src.height


def test_pointer_names_the_newest_of_three_versions(tmp_path, s3_env, bundle):
    """Each incremental run publishes a new version through the pointer; 3 are kept; the old ones stay whole."""
    scene = s3_env.upload(write_scene(tmp_path / "a.tif", (64, 64), seed=1), "inc/a.tif")
    out = f"s3://{s3_env.bucket}/results/inc"
    args = ["predict", "--model", str(bundle), "--out", out, "--workers", "1", "--tile", "64", "--no-cog",
            "--incremental", scene]
    fs = CloudSettings.of().filesystem("s3")
    seen = []
    for n in range(4):
        if n:
            s3_env.upload(write_scene(tmp_path / f"b{n}.tif", (64, 64), seed=10 + n), f"inc/b{n}.tif")
            args.append(f"s3://{s3_env.bucket}/inc/b{n}.tif")
        assert main(args) == 0
        pointer = json.loads(fs.cat_file(f"{s3_env.bucket}/results/inc/{POINTER_NAME}"))
        seen.append(pointer["version"])
        manifest = json.loads(fs.cat_file(f"{ObjectPath(pointer['url']).key}/manifest.json"))
        assert manifest["summary"]["scenes_reused"] == (1 if n else 0) + max(n - 1, 0)
        assert manifest["summary"]["scenes_predicted"] == 1
    assert len(set(seen)) == 4
    versions = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_env.bucket}/results/inc/versions", refresh=True))
    assert versions == sorted(seen[-3:]), "the 3 newest versions are kept"
    assert pointer["history"] == seen[::-1][:3]


class PointerPoller:
    """Reads ``OUT/current.json`` every few milliseconds in a thread and checks that the version it names is
    complete: its manifest is there, every output the manifest lists is there, no completion record is."""

    def __init__(self, fs, out_key: str) -> None:
        import threading

        self.fs, self.out_key = fs, out_key
        self.seen: list[str] = []
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PointerPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            try:
                pointer = json.loads(self.fs.cat_file(f"{self.out_key}/{POINTER_NAME}"))
            except FileNotFoundError:
                continue
            if not self.seen or self.seen[-1] != pointer["version"]:
                self.seen.append(pointer["version"])
                self._check(ObjectPath(pointer["url"]))

    def _check(self, version: ObjectPath) -> None:
        self.fs.invalidate_cache()  # s3fs caches listings
        try:
            manifest = json.loads(self.fs.cat_file(f"{version.key}/manifest.json"))
        except FileNotFoundError:
            self.problems.append(f"{version}: no manifest")
            return
        for entry in manifest["outputs"]:
            for key in ("zarr", "mask_cog", "probability_cog"):
                path = ObjectPath(entry[key]).key + ("/.zmetadata" if key == "zarr" else "")
                if not self.fs.exists(path):
                    self.problems.append(f"{version}: {key} missing")
        if self.fs.exists(f"{version.key}/.done"):
            self.problems.append(f"{version}: completion records published")


def _predict_command(scene: str, bundle: Path, out: str, tile: int, *extra: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "geoseg_batch.cli", "--quiet", "predict", scene, "--model", str(bundle),
            "--out", out, "--tile", str(tile), "--workers", "1", *extra]


def _records(fs, out_key: str) -> int:
    fs.invalidate_cache()  # s3fs caches listings
    return len(fs.glob(f"{out_key}/versions/*/.done/scene/*"))


@pytest.mark.slow
def test_killed_client_resumes_on_s3_and_readers_never_see_a_partial_version(tmp_path, s3_env, bundle):
    import signal
    import time

    scene = s3_env.upload(write_scene(tmp_path / "scene.tif", (512, 512), bands=3), "kill/scene.tif")
    out = f"s3://{s3_env.bucket}/results/killed"
    out_key = ObjectPath(out).key
    fs = CloudSettings.of().filesystem("s3")
    with PointerPoller(fs, out_key) as poller:
        first = subprocess.run(_predict_command(scene, bundle, out, 128), capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        # The client process and its embedded cluster die together, as when a terminal is closed.
        process = subprocess.Popen(_predict_command(scene, bundle, out, 64, "--overwrite"), start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=(tmp_path / "killed.err").open("w"))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None and _records(fs, out_key) < 20:
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        done_before = _records(fs, out_key)
        assert 20 <= done_before < 64, (tmp_path / "killed.err").read_text()
        assert len(poller.seen) == 1, "the killed run published nothing"
        assert fs.exists(f"{out_key}/.lease.json"), "the killed run's lease is left behind"
        rerun = subprocess.run(_predict_command(scene, bundle, out, 64, "--overwrite"), capture_output=True,
                               text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        time.sleep(0.2)
    assert len(poller.seen) == 2 and not poller.problems, poller.problems
    assert "taking over the lock" in rerun.stderr or not fs.exists(f"{out_key}/.lease.json")
    version = ObjectPath(json.loads(fs.cat_file(f"{out_key}/{POINTER_NAME}"))["url"])
    summary = json.loads(fs.cat_file(f"{version.key}/manifest.json"))["summary"]
    assert summary["tiles_total"] == 64 and summary["tiles_resumed"] >= done_before
    assert summary["tiles_computed"] + summary["tiles_skipped"] == 64 - summary["tiles_resumed"] < 64
    clean = tmp_path / "clean"
    done = subprocess.run(_predict_command(str(tmp_path / "scene.tif"), bundle, str(clean), 64), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    options = CloudSettings.of().storage_options()
    expected, got = _arrays(str(clean / "scene.zarr")), _arrays(f"{version}/scene.zarr", options)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    CloudSettings.of().apply()
    for cog in ("scene_mask.tif", "scene_probabilities.tif"):
        with rasterio.open(clean / cog) as a, rasterio.open(f"/vsis3/{version.key}/{cog}") as b:
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=cog)


def _refused(capsys, *args: str) -> str:
    import time

    started = time.perf_counter()
    code = main(["predict", *args, "--workers", "1", "--tile", "64"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, line
    assert line.startswith("geoseg-batch: error: ") and time.perf_counter() - started < 30, line
    return line


def test_bad_output_locations_fail_in_one_line_and_publish_nothing(tmp_path, s3_env, bundle, capsys, monkeypatch):
    import socket

    scene = str(write_scene(tmp_path / "s.tif", (64, 64)))
    fs = CloudSettings.of().filesystem("s3")
    line = _refused(capsys, scene, "--model", str(bundle), "--out", "s3://no-such-bucket/out")
    assert "s3://no-such-bucket/out" in line and "no such bucket" in line
    with socket.socket() as probe:  # a port nothing listens on: bound, read, closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = _refused(capsys, scene, "--model", str(bundle), "--out", f"s3://{s3_env.bucket}/results/unreachable",
                    "--endpoint-url", f"http://127.0.0.1:{port}")
    assert "cannot be reached" in line and f"127.0.0.1:{port}" in line
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong/secret/wrong/secret")
    line = _refused(capsys, scene, "--model", str(bundle), "--out", f"s3://{s3_env.bucket}/results/denied")
    assert "access denied" in line and "403" in line and "wrong/secret" not in line
    fs.invalidate_cache()
    assert not fs.exists(f"{s3_env.bucket}/results/unreachable") and not fs.exists(f"{s3_env.bucket}/results/denied")


def test_https_output_is_refused(tmp_path, bundle, capsys):
    line = _refused(capsys, str(write_scene(tmp_path / "s.tif", (64, 64))), "--model", str(bundle),
                    "--out", "https://example.invalid/out")
    assert "read-only" in line


def test_no_secret_in_any_object_or_file_written(tmp_path, s3_env, bundle, capsys):
    secret = s3_env.secret_key
    scene = s3_env.upload(write_scene(tmp_path / "scene.tif", (96, 96)), "secret-out/scene.tif")
    out = f"s3://{s3_env.bucket}/results/secret"
    assert main(["-v", "predict", scene, "--model", str(bundle), "--out", out, "--workers", "1",
                 "--tile", "64"]) == 0
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err and "predict:" in captured.err
    fs = CloudSettings.of().filesystem("s3")
    fs.invalidate_cache()
    objects = fs.find(f"{s3_env.bucket}/results/secret")
    assert any(o.endswith("manifest.json") for o in objects) and any(o.endswith(POINTER_NAME) for o in objects)
    for key in objects:
        assert secret.encode() not in fs.cat_file(key), key
    logs = list(Path(".geoseg-batch-logs").glob("s3-scenes-results-secret*.log"))
    assert logs, "the run's log file is checked too"
    for path in logs:
        assert secret.encode() not in path.read_bytes()


def test_wait_on_s3_finds_the_published_run_and_does_nothing(tmp_path, s3_env, bundle):
    from geoseg_batch import predict_scene

    scene = s3_env.upload(write_scene(tmp_path / "w.tif", (64, 64)), "wait/w.tif")
    out = f"s3://{s3_env.bucket}/results/wait"
    first = predict_scene([scene], model=str(bundle), out=out, tile=64, cog=False, workers=1)
    again = predict_scene([scene], model=str(bundle), out=out, tile=64, cog=False, workers=1, wait=True)
    assert again.summary["already_done"] and str(again.manifest) == str(first.manifest)
    assert str(again.manifest).startswith(f"{out}/versions/") and str(again.manifest).endswith("manifest.json")
