"""Results as STAC in object storage: the static collection is inside the published version (relative hrefs
that resolve to its objects), and a mosaic's Item links the predicted scenes' Items in their version."""

from __future__ import annotations

import json
import posixpath

from geoseg_batch import mosaic, predict_scene
from geoseg_batch.io.object_storage import current_version
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import ObjectPath

from tests.helpers import make_bundle, write_scene


def _doc(fs, url: str) -> dict:
    return json.loads(fs.cat_file(url.split("://", 1)[1]))


def _resolved(url: str, href: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), href))}"


def test_the_collection_is_in_the_published_version(tmp_path, s3_env):
    bundle = make_bundle(tmp_path / "m.keras")
    scene = s3_env.upload(write_scene(tmp_path / "a.tif", (96, 128)), "stac/in/a.tif")
    out, mos = f"s3://{s3_env.bucket}/stac/pred", f"s3://{s3_env.bucket}/stac/mos"
    predicted = predict_scene([scene], bundle, out, tile=64, workers=1)
    cloud = CloudSettings.of()
    fs, version = cloud.filesystem("s3"), current_version(ObjectPath(out), cloud)
    assert predicted.summary["stac"] == f"{version}/stac/collection.json"
    collection = _doc(fs, predicted.summary["stac"])
    items = [_resolved(predicted.summary["stac"], link["href"]) for link in collection["links"] if link["rel"] == "item"]
    assert f"{version}/stac/a/a.json" in items and len(items) == 2  # the scene and the model's MLM Item
    item = _doc(fs, f"{version}/stac/a/a.json")
    assert item["properties"]["geoseg:scene"] == scene and item["properties"]["proj:code"] == "EPSG:32633"
    for asset in item["assets"].values():
        assert not asset["href"].startswith("s3://"), "relative inside the version"
        assert fs.exists(_resolved(f"{version}/stac/a/a.json", asset["href"]).split("://", 1)[1]), asset["href"]

    done = mosaic([out], mos, workers=1)
    mosaic_version = current_version(ObjectPath(mos), cloud)
    assert done.summary["stac"] == f"{mosaic_version}/stac/collection.json"
    mosaic_item = _doc(fs, f"{mosaic_version}/stac/mosaic/mosaic.json")
    sources = [link["href"] for link in mosaic_item["links"] if link["rel"] == "derived_from"]
    assert f"{version}/stac/a/a.json" in sources
    assert all(fs.exists(href.split("://", 1)[1]) for href in sources), sources
