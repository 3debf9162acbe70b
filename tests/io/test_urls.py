"""Storage locations and cloud settings: what a URL is, what GDAL and fsspec call it, one set of settings."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from geoseg_batch.config import PredictJob, StorageSpec, resolved
from geoseg_batch.errors import ConfigError
from geoseg_batch.io import urls
from geoseg_batch.io.remote import CloudSettings


@pytest.mark.parametrize("value, gdal, fs", [
    ("s3://bucket/scenes/a.tif", "/vsis3/bucket/scenes/a.tif", "bucket/scenes/a.tif"),
    ("gs://bucket/a.tif", "/vsigs/bucket/a.tif", "bucket/a.tif"),
    ("az://container/dir/a.tif", "/vsiaz/container/dir/a.tif", "container/dir/a.tif"),
    ("https://host/data/a.tif", "/vsicurl/https://host/data/a.tif", "https://host/data/a.tif"),
    ("scenes/a.tif", "scenes/a.tif", "scenes/a.tif"),
])
def test_gdal_and_fsspec_names(value, gdal, fs):
    loc = urls.location(value)
    assert urls.gdal_path(loc) == gdal and urls.fsspec_path(loc) == fs
    assert urls.name(loc) == "a.tif" and urls.stem(loc) == "a"
    assert isinstance(loc, str if "://" in value else Path)
    assert str(loc) == value  # an URL is not folded into s3:/


def test_bad_urls_and_siblings():
    with pytest.raises(ValueError, match="unsupported protocol 'ftp'"):
        urls.location("ftp://host/a.tif")
    with pytest.raises(ValueError, match="names a bucket"):
        urls.location("s3://bucket")
    assert urls.sibling("s3://b/lists/night.txt", "../in/a.tif") == "s3://b/in/a.tif"
    assert urls.sibling("s3://b/lists/night.txt", "s3://c/x.tif") == "s3://c/x.tif"
    assert urls.sibling(Path("lists/night.txt"), "a.tif") == Path("lists/a.tif")
    assert urls.stem("s3://b/RGB.byte.tif") == "RGB.byte"


def test_one_set_of_settings_for_gdal_and_fsspec():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/", "AWS_REGION": "eu-west-1",
           "AWS_SECRET_ACCESS_KEY": "not-in-settings"}
    settings = CloudSettings.of(None, env)
    gdal = settings.gdal_options()
    assert gdal["AWS_S3_ENDPOINT"] == "127.0.0.1:9000" and gdal["AWS_HTTPS"] == "NO"
    assert gdal["AWS_VIRTUAL_HOSTING"] == "FALSE" and gdal["AWS_REGION"] == "eu-west-1"
    assert gdal["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR" and gdal["GDAL_HTTP_MULTIPLEX"] == "YES"
    assert int(gdal["GDAL_HTTP_MAX_RETRY"]) >= 1 and float(gdal["GDAL_HTTP_RETRY_DELAY"]) > 0
    fs = settings.storage_options("s3")
    assert fs["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}
    assert "not-in-settings" not in repr(settings) + repr(gdal) + repr(fs) + repr(pickle.dumps(settings))
    spec = StorageSpec(endpoint_url="https://minio.example:9443", profile="night", anonymous=True)
    block = CloudSettings.of(spec, env)  # the job's block wins over the environment
    assert block.gdal_options()["AWS_S3_ENDPOINT"] == "minio.example:9443"
    assert block.gdal_options()["AWS_HTTPS"] == "YES" and block.gdal_options()["AWS_NO_SIGN_REQUEST"] == "YES"
    assert block.storage_options()["profile"] == "night" and block.storage_options()["anon"] is True
    with pytest.raises(ConfigError, match="expected an http"):
        CloudSettings.of(StorageSpec(endpoint_url="127.0.0.1:9000"), {})


def test_jobs_keep_urls_and_record_no_secret():
    job = PredictJob(scenes=[Path("a.tif"), "s3://bucket/b.tif"], model="m.keras", out="o",
                     storage={"endpoint_url": "http://127.0.0.1:9000"})
    assert job.scenes == ["a.tif", "s3://bucket/b.tif"]
    assert resolved(job)["storage"] == {"endpoint_url": "http://127.0.0.1:9000", "region": None, "profile": None,
                                        "anonymous": False}
    with pytest.raises(ValueError, match="extra"):
        PredictJob(scenes=["a.tif"], model="m", out="o", storage={"secret_access_key": "x"})


def test_a_bad_endpoint_in_the_environment_fails_only_when_used():
    settings = CloudSettings.of(None, {"AWS_ENDPOINT_URL": "minio:9000"})  # a local run is not stopped by it
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL.*expected an http"):
        settings.gdal_options()
