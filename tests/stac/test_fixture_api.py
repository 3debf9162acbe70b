"""The STAC fixtures are real: a STAC API that pystac-client searches, whose catalogue the tests change between
"nights", whose Items' assets GDAL reads from the loopback S3 server through /vsis3/."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

pytestmark = pytest.mark.realdata

NAMES = {"utm_multiband", "wgs84", "per_band"}


def _search(stac_api, collection_id: str, **query) -> list:
    """The pystac Items that a search of ``collection_id`` on ``stac_api`` returns."""
    from pystac_client import Client

    return list(Client.open(stac_api.url).search(collections=[collection_id], **query).items())


def test_search_returns_the_three_items_as_built(stac_api, stac_collection, stac_items):
    from pystac_client import Client

    client = Client.open(stac_api.url)
    assert client.conforms_to("ITEM_SEARCH")
    items = {item.id: item for item in _search(stac_api, stac_collection)}
    assert set(items) == NAMES
    for name, item in items.items():
        built = stac_items[name].item
        served = item.to_dict()
        assert served["stac_extensions"] == built["stac_extensions"]
        assert served["assets"] == built["assets"], "assets served as built (hrefs, eo, raster, proj fields)"
        assert served["properties"]["datetime"] == built["properties"]["datetime"]
        assert item.get_self_href() == stac_api.item_url(stac_collection, name)
        assert item.collection_id == stac_collection
        assert all(asset.href.startswith(f"s3://scenes/stac/{name}/") for asset in item.assets.values())
    assert set(items["per_band"].assets) == {"red", "green", "blue"}
    assert [b["name"] for b in items["wgs84"].assets["image"].extra_fields["eo:bands"]] == \
        ["red", "green", "blue", "nir"]
    resolutions = {key: a.extra_fields["raster:bands"][0]["spatial_resolution"]
                   for key, a in items["per_band"].assets.items()}
    assert resolutions["red"] == resolutions["green"] == pytest.approx(300.04, abs=0.01)  # the file's grid
    assert resolutions["blue"] == 2 * resolutions["red"]


def test_served_items_pass_rustac_validate_of_the_core_schema(stac_api, stac_collection, tmp_path):
    from tests.stac.server import core_schema_errors, get_json

    served = get_json(f"{stac_api.url}collections/{stac_collection}/items")["features"]
    assert len(served) == 3
    for item in served:
        assert core_schema_errors(item, tmp_path, stac_api.command) == ""
    broken = dict(served[0], properties={k: v for k, v in served[0]["properties"].items() if k != "datetime"})
    assert "not valid" in core_schema_errors(broken, tmp_path, stac_api.command)


def test_datetime_filter_returns_only_the_newer_item(stac_api, stac_collection):
    assert [item.id for item in _search(stac_api, stac_collection, datetime="2024-05-02T12:00:00Z/..")] == \
        ["per_band"]
    assert {item.id for item in _search(stac_api, stac_collection, datetime="2024-05-01/2024-05-02")} == \
        {"utm_multiband", "wgs84"}


def test_an_item_added_and_one_deleted_are_seen_by_the_next_search(stac_api, stac_collection, stac_items):
    night2 = json.loads(json.dumps(stac_items["utm_multiband"].item))
    night2["id"] = "utm_multiband_night2"
    night2["properties"]["datetime"] = "2024-05-10T10:00:00Z"
    served = stac_api.add_item(stac_collection, night2)
    assert {link["rel"] for link in served["links"]} >= {"self", "collection", "root"}
    assert {item.id for item in _search(stac_api, stac_collection)} == NAMES | {"utm_multiband_night2"}
    assert [item.id for item in _search(stac_api, stac_collection, datetime="2024-05-05T00:00:00Z/..")] == \
        ["utm_multiband_night2"]

    stac_api.delete_item(stac_collection, "wgs84")
    assert {item.id for item in _search(stac_api, stac_collection)} == NAMES - {"wgs84"} | {"utm_multiband_night2"}
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(stac_api.item_url(stac_collection, "wgs84"), timeout=10)
    assert gone.value.code == 404


def test_the_api_has_no_transactions(stac_api, stac_collection, stac_items):
    """rustac serve answers 405 to a Transactions POST: the fixture changes the catalogue by restarting it."""
    request = urllib.request.Request(f"{stac_api.url}collections/{stac_collection}/items", method="POST",
                                     data=json.dumps(stac_items["wgs84"].item).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


def test_asset_hrefs_open_through_vsis3_on_the_loopback_endpoint(stac_api, stac_collection, stac_items, s3_env):
    import rasterio
    from rasterio.transform import Affine

    from geoseg_batch.io.remote import CloudSettings

    with rasterio.Env(**CloudSettings.of().gdal_options()):
        for item in _search(stac_api, stac_collection):
            for key, asset in item.assets.items():
                with rasterio.open(asset.href.replace("s3://", "/vsis3/", 1)) as remote, \
                        rasterio.open(stac_items[item.id].asset_files[key]) as local:
                    assert remote.crs.to_string() == asset.extra_fields["proj:code"]
                    assert list(remote.shape) == asset.extra_fields["proj:shape"]
                    assert remote.transform == Affine(*asset.extra_fields["proj:transform"])
                    assert remote.count == len(asset.extra_fields["eo:bands"])
                    np.testing.assert_array_equal(remote.read(), local.read())


def test_local_equivalents(stac_items):
    import rasterio

    from tests.stac.items import CHIPS, RGB

    with rasterio.open(stac_items["per_band"].local) as vrt, rasterio.open(RGB) as rgb:
        assert vrt.descriptions == ("red", "green", "blue") == stac_items["per_band"].band_names
        assert vrt.shape == (718, 790) and vrt.res == rgb.res and vrt.nodatavals == (0, 0, 0)
        assert vrt.transform == rgb.transform
        window = rasterio.windows.Window(0, 0, 790, 718)
        np.testing.assert_array_equal(vrt.read(1), rgb.read(1, window=window))
        blue = vrt.read(3)  # the 600 m band, resampled (nearest) onto the 300 m grid
        assert blue.shape == (718, 790) and np.array_equal(blue[::2, ::2], blue[1::2, 1::2])
    with rasterio.open(stac_items["wgs84"].local) as cog, rasterio.open(sorted(CHIPS.glob("*.tif"))[0]) as chip:
        assert cog.crs.to_epsg() == 4326 and cog.count == 4 and cog.transform == chip.transform
        np.testing.assert_array_equal(cog.read(), chip.read())
    with rasterio.open(stac_items["utm_multiband"].local) as cog, rasterio.open(RGB) as rgb:
        assert cog.crs.to_epsg() == 32618 and cog.nodata == 0
        np.testing.assert_array_equal(cog.read(), rgb.read())


def test_rgb_bundle_names_the_items_bands(rgb_bundle):
    from geoseg_batch.model.bundle import read_metadata

    assert read_metadata(rgb_bundle).band_names == ("red", "green", "blue")
