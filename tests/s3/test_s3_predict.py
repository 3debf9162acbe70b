"""predict from s3:// on the loopback S3 server: the same results as from the local file, URLs kept as URLs,
ETag checksums, one-line errors for bad storage input, and no secret in anything written."""

from __future__ import annotations

import json
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import rasterio
import zarr

from geoseg_batch.cli import main

from tests.helpers import write_scene


def _arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def _predict(capsys, *args: str) -> tuple[int, str]:
    code = main(["predict", *args, "--workers", "1"])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def _assert_clean(code, line, out, started, *needles):
    assert code == 2, line
    assert line.startswith("geoseg-batch: error: ")
    for needle in needles:
        assert needle in line, line
    assert time.perf_counter() - started < 30, "bad storage input fails fast"
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_predict_from_s3_equals_local(tmp_path, s3_server, bundle, scene_file, capsys):
    url = s3_server.upload(scene_file, "landsat/RGB.byte.tif")
    local, remote = tmp_path / "local", tmp_path / "remote"
    common = ["--model", str(bundle), "--tile", "256", "--workers", "1"]
    assert main(["predict", str(scene_file), "--out", str(local), *common]) == 0
    # The endpoint given as a flag only (no AWS_ENDPOINT_URL): the workers learn it from their tasks.
    assert main(["predict", url, "--endpoint-url", s3_server.endpoint, "--out", str(remote), *common]) == 0
    expected, got = _arrays(local / "RGB.byte.zarr"), _arrays(remote / "RGB.byte.zarr")
    assert expected.keys() == got.keys() and {"mask", "probabilities"} <= set(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    for cog in ("RGB.byte_mask.tif", "RGB.byte_probabilities.tif"):
        with rasterio.open(local / cog) as a, rasterio.open(remote / cog) as b:
            assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=cog)
    manifest = json.loads((remote / "manifest.json").read_text())
    assert manifest["outputs"][0]["scene"] == url  # not s3:/landsat/...
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key="landsat/RGB.byte.tif")
    assert manifest["checksums"][url] == f"etag:{head['ETag'].strip(chr(34))}:{head['ContentLength']}"
    assert manifest["config"]["storage"]["endpoint_url"] == s3_server.endpoint
    state = json.loads((remote / "state.json").read_text()) if (remote / "state.json").exists() else None
    assert state is None or url in json.dumps(state)


def test_glob_of_urls_expands(tmp_path, s3_env, bundle, capsys):
    for n in (1, 2):
        s3_env.upload(write_scene(tmp_path / f"night_{n}.tif", (64, 64), seed=n), f"incoming/night_{n}.tif")
    s3_env.upload(write_scene(tmp_path / "other.tif", (64, 64)), "elsewhere/other.tif")
    out = tmp_path / "out"
    assert main(["predict", f"s3://{s3_env.bucket}/incoming/*.tif", "--model", str(bundle), "--out", str(out),
                 "--workers", "1", "--tile", "64", "--no-cog"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [o["scene"] for o in manifest["outputs"]] == [f"s3://{s3_env.bucket}/incoming/night_{n}.tif"
                                                        for n in (1, 2)]
    assert sorted(p.name for p in out.glob("*.zarr")) == ["night_1.zarr", "night_2.zarr"]
    assert all(v.startswith("etag:") for k, v in manifest["checksums"].items() if k.startswith("s3://"))
    code, line = _predict(capsys, f"s3://{s3_env.bucket}/incoming/*.jp2", "--model", str(bundle),
                          "--out", str(tmp_path / "none"))
    assert code == 2 and "matches no files" in line


def test_missing_key_and_bucket(tmp_path, s3_env, bundle, capsys):
    out = tmp_path / "out"
    started = time.perf_counter()
    code, line = _predict(capsys, f"s3://{s3_env.bucket}/no/such.tif", "--model", str(bundle), "--out", str(out))
    _assert_clean(code, line, out, started, "s3://scenes/no/such.tif", "no such object")
    started = time.perf_counter()
    code, line = _predict(capsys, "s3://no-such-bucket/a.tif", "--model", str(bundle), "--out", str(out))
    _assert_clean(code, line, out, started, "s3://no-such-bucket/a.tif", "no such bucket")


def test_wrong_credentials(tmp_path, s3_env, bundle, scene_file, capsys, monkeypatch):
    url = s3_env.upload(scene_file, "creds/RGB.byte.tif")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong/secret/wrong/secret")
    out = tmp_path / "out"
    started = time.perf_counter()
    code, line = _predict(capsys, url, "--model", str(bundle), "--out", str(out))
    _assert_clean(code, line, out, started, url, "access denied", "403")
    assert "wrong/secret" not in line


def test_unreachable_endpoint(tmp_path, s3_server, bundle, capsys):
    with socket.socket() as probe:  # a port nothing listens on: bound, read, closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    started = time.perf_counter()
    code, line = _predict(capsys, f"s3://{s3_server.bucket}/a.tif", "--endpoint-url", f"http://127.0.0.1:{port}",
                          "--model", str(bundle), "--out", str(out))
    _assert_clean(code, line, out, started, "cannot be reached", f"127.0.0.1:{port}")


def test_no_secret_in_anything_written(tmp_path, s3_env, bundle, capsys, caplog):
    secret = s3_env.secret_key  # the known secret the environment holds (moto checks every signature with it)
    url = s3_env.upload(write_scene(tmp_path / "scene.tif", (96, 96)), "secret/scene.tif")
    out = tmp_path / "runs" / "out"
    assert main(["-v", "predict", url, "--model", str(bundle), "--out", str(out), "--workers", "1",
                 "--tile", "64"]) == 0
    captured = capsys.readouterr()
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written)
    assert any(".geoseg-batch-logs" in p.parts for p in written), "the run's log file is checked too"
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    assert "predict:" in captured.err  # -v: the run's log lines were there to be checked
    assert secret not in captured.out + captured.err
    assert not [r for r in caplog.records if secret in r.getMessage()]
    from geoseg_batch.geo.scene import open_scene
    from geoseg_batch.infer.reading import SceneInput
    from geoseg_batch.model.bundle import read_metadata

    task_data = pickle.dumps(SceneInput.of(open_scene(url, read_metadata(bundle))))  # what tasks carry
    assert secret.encode() not in task_data and b"endpoint" in task_data


def test_validate_a_job_with_s3_scenes_and_a_storage_block(tmp_path, s3_server, bundle, capsys):
    import yaml

    url = s3_server.upload(write_scene(tmp_path / "v.tif", (64, 64)), "validate/v.tif")
    job = {"kind": "predict", "scenes": [url], "model": str(bundle), "out": str(tmp_path / "out"),
           "storage": {"endpoint_url": s3_server.endpoint}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["validate", str(path)]) == 0
    path.write_text(yaml.safe_dump({**job, "scenes": [f"s3://{s3_server.bucket}/validate/gone.tif"]}))
    assert main(["validate", str(path)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "scenes: s3://scenes/validate/gone.tif: no such object" in line, line


def test_a_window_reads_a_fraction_of_the_object(tmp_path, s3_env, bundle):
    """Scenes are read window by window over /vsis3/ (ranged GETs), never downloaded whole."""
    from geoseg_batch.geo.grid import Window
    from geoseg_batch.geo.scene import open_scene
    from geoseg_batch.infer.reading import SceneInput
    from geoseg_batch.model.bundle import read_metadata

    big = write_scene(tmp_path / "big.tif", (2048, 2048), bands=3)
    url = s3_env.upload(big, "big/big.tif")
    before = s3_env.served("big/big.tif")
    scene = SceneInput.of(open_scene(url, read_metadata(bundle)))
    out = np.empty((256, 256, 3), np.float32)
    scene.read_into(Window(512, 768, 512, 768), out)
    with rasterio.open(big) as src:
        np.testing.assert_array_equal(out, np.moveaxis(src.read(window=((512, 768), (512, 768))), 0, -1))
    fetched, size = s3_env.served("big/big.tif") - before, big.stat().st_size
    assert 0 < fetched < 0.1 * size, (fetched, size)


def test_a_scene_list_in_the_bucket_names_scenes_relative_to_it(tmp_path, s3_env):
    from geoseg_batch.geo.scene import scene_paths
    from geoseg_batch.io.remote import CloudSettings

    listing = tmp_path / "night.txt"
    listing.write_text("# tonight\n../incoming/a.tif\ns3://other/b.tif\n\n")
    url = s3_env.upload(listing, "lists/night.txt")
    found = scene_paths([f"s3://{s3_env.bucket}/incoming/c.tif"], url, CloudSettings.of())
    assert found == [f"s3://{s3_env.bucket}/incoming/c.tif", f"s3://{s3_env.bucket}/incoming/a.tif", "s3://other/b.tif"]
