"""CloudSettings.apply() sets GDAL's config for object storage from GDAL's own values: settings cleared behind its
back (another library, a rasterio.Env closing) are set again on the next apply, as every read calls it."""

from __future__ import annotations

from rasterio.env import get_gdal_config, set_gdal_config

from geoseg_batch.io.remote import CloudSettings


def test_settings_cleared_by_an_env_are_set_again():
    settings = CloudSettings("http://127.0.0.1:9", "eu-west-1")
    settings.apply()
    assert get_gdal_config("AWS_S3_ENDPOINT", normalize=False) == "127.0.0.1:9"
    set_gdal_config("AWS_S3_ENDPOINT", None)  # cleared behind its back
    set_gdal_config("AWS_REGION", "us-east-1", normalize=False)
    settings.apply()
    assert get_gdal_config("AWS_S3_ENDPOINT", normalize=False) == "127.0.0.1:9"
    assert get_gdal_config("AWS_REGION", normalize=False) == "eu-west-1"
    CloudSettings(None, None).apply()  # other settings: the previous ones' extras are cleared
    assert get_gdal_config("AWS_S3_ENDPOINT", normalize=False) is None
