"""A model bundle in object storage: its metadata read without loading it, its ETag checksum, one-line errors
before any cluster is asked for, and a worker's copy checked against the object the run was keyed with."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from geoseg_batch.cli import main

from tests.helpers import make_bundle, write_scene


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "m.keras", bands=3)


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on: bound, read, closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _refused(capsys, tmp_path: Path, model: str, *args: str) -> str:
    """The error line of a predict of a small local scene with ``model``, asked of a scheduler that does not
    exist: the model's error must come first, within seconds, with nothing written."""
    scene = write_scene(tmp_path / "scene.tif", (64, 64))
    out = tmp_path / "out"
    started = time.perf_counter()
    code = main(["predict", str(scene), "--model", model, "--out", str(out), "--tile", "64",
                 "--scheduler", f"tcp://127.0.0.1:{_closed_port()}", *args])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, line
    assert line.startswith("geoseg-batch: error: ") and model in line, line
    assert "scheduler" not in line, "the model is checked before any cluster is connected to"
    assert time.perf_counter() - started < 30
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    return line


def test_metadata_and_checksum_of_a_bundle_url(s3_server, bundle):
    from geoseg_batch.io.publish import checksums
    from geoseg_batch.io.remote import CloudSettings
    from geoseg_batch.model.bundle import read_metadata

    url = s3_server.upload(bundle, "models/m.keras")
    cloud = CloudSettings(endpoint_url=s3_server.endpoint)
    before = s3_server.served("models/m.keras")
    assert read_metadata(url, cloud) == read_metadata(bundle)
    fetched = s3_server.served("models/m.keras") - before
    assert 0 < fetched < bundle.stat().st_size / 4, "the zip's directory and one member, not the whole bundle"
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key="models/m.keras")
    assert checksums([url], cloud) == {url: f"etag:{head['ETag'].strip(chr(34))}:{bundle.stat().st_size}"}


def test_missing_bundle_key(tmp_path, s3_env, capsys):
    line = _refused(capsys, tmp_path, f"s3://{s3_env.bucket}/models/none.keras")
    assert "no such object" in line, line


def test_bundle_url_with_wrong_credentials(tmp_path, s3_env, bundle, capsys, monkeypatch):
    url = s3_env.upload(bundle, "models/creds.keras")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong/secret/wrong/secret")
    line = _refused(capsys, tmp_path, url)
    assert "access denied" in line and "403" in line and "wrong/secret" not in line, line


def test_bundle_url_on_an_unreachable_store(tmp_path, s3_server, capsys):
    port = _closed_port()
    line = _refused(capsys, tmp_path, f"s3://{s3_server.bucket}/models/m.keras",
                    "--endpoint-url", f"http://127.0.0.1:{port}")
    assert "cannot be reached" in line and f"127.0.0.1:{port}" in line, line


def test_an_object_that_is_not_a_bundle(tmp_path, s3_env, capsys):
    text = tmp_path / "notes.keras"
    text.write_text("not a zip")
    line = _refused(capsys, tmp_path, s3_env.upload(text, "models/notes.keras"))
    assert "not a model bundle" in line, line


def test_a_worker_refuses_a_bundle_replaced_after_the_run_read_it(tmp_path, s3_server, bundle):
    from geoseg_batch.errors import BundleError
    from geoseg_batch.infer.bundle_source import bundle_source
    from geoseg_batch.io.publish import checksums
    from geoseg_batch.io.remote import CloudSettings

    url = s3_server.upload(bundle, "models/replaced.keras")
    cloud = CloudSettings(endpoint_url=s3_server.endpoint)
    source = bundle_source(url, checksums([url], cloud)[url], cloud, carried=True)
    with source.local_file(tmp_path) as path:
        assert path.read_bytes() == bundle.read_bytes() and path.parent.parent == tmp_path
    assert not list(tmp_path.iterdir()), "the copy is removed once read"
    s3_server.upload(make_bundle(tmp_path / "other.keras", bands=3, seed=9), "models/replaced.keras")
    with pytest.raises(BundleError, match="changed after this run read it"):
        with source.local_file(tmp_path):
            pass


def test_validate_checks_a_bundle_url(tmp_path, s3_server, bundle, capsys):
    import yaml

    url = s3_server.upload(bundle, "models/validate.keras")
    scene = write_scene(tmp_path / "v.tif", (64, 64))
    job = {"kind": "predict", "scenes": [str(scene)], "model": url, "out": str(tmp_path / "out"),
           "storage": {"endpoint_url": s3_server.endpoint}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["validate", str(path)]) == 0
    path.write_text(yaml.safe_dump({**job, "model": f"s3://{s3_server.bucket}/models/gone.keras"}))
    assert main(["validate", str(path)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model: s3://scenes/models/gone.keras: no such object" in line, line


def test_a_model_url_of_an_unknown_protocol_is_refused_by_the_schema(tmp_path, capsys):
    scene = write_scene(tmp_path / "v.tif", (64, 64))
    assert main(["predict", str(scene), "--model", "ftp://host/m.keras", "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ftp://host/m.keras" in line and "unsupported protocol" in line, line
