"""Searching catalogs (stac/catalog.py) without an API: static ItemCollections and catalogs filtered locally, and
the one-line errors of catalogs that cannot be read (a closed port, a port that never answers, bad JSON)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from geoseg_batch.config import StacSpec
from geoseg_batch.errors import CatalogError
from geoseg_batch.stac.catalog import find_items
from tests.stac.server import free_port


def _item(item_id, when, bbox=(0, 0, 1, 1), collection="c1"):
    w, s, e, n = bbox
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
            "bbox": list(bbox), "properties": {"datetime": when},
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "links": [], "assets": {"data": {"href": f"data/{item_id}.tif"}}}


@pytest.fixture
def item_collection(tmp_path):
    items = [_item("a", "2024-01-05T00:00:00Z"), _item("b", "2024-03-01T10:00:00Z", (5, 5, 6, 6)),
             _item("c", "2024-06-30T00:00:00Z", collection="c2")]
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def test_item_collection_file_filtered_like_a_search(item_collection):
    url = str(item_collection)
    assert [i["id"] for i in find_items(StacSpec(url=url))] == ["a", "b", "c"]
    assert [i["id"] for i in find_items(StacSpec(url=url, collections=["c1"]))] == ["a", "b"]
    assert [i["id"] for i in find_items(StacSpec(url=url, bbox=(4.5, 4.5, 5.5, 5.5)))] == ["b"]
    assert [i["id"] for i in find_items(StacSpec(url=url, datetime="2024-02-01/.."))] == ["b", "c"]
    assert [i["id"] for i in find_items(StacSpec(url=url, datetime="../2024-03-01"))] == ["a", "b"]
    assert [i["id"] for i in find_items(StacSpec(url=url, ids=["c"]))] == ["c"]
    assert len(find_items(StacSpec(url=url, max_items=2))) == 2
    assert find_items(StacSpec(url=url, datetime="2025-01-01/..")) == []
    first = find_items(StacSpec(url=url, ids=["a"]))[0]
    assert first["assets"]["data"]["href"] == str(item_collection.parent / "data" / "a.tif")  # made absolute
    with pytest.raises(CatalogError, match="query .* needs a STAC API"):
        find_items(StacSpec(url=url, query=["eo:cloud_cover<10"]))


def test_static_catalog_followed_through_its_links(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.json").write_text(json.dumps(_item("x", "2024-01-01T00:00:00Z")))
    (tmp_path / "sub" / "collection.json").write_text(json.dumps(
        {"type": "Collection", "id": "sub", "links": [{"rel": "item", "href": "./x.json"}]}))
    (tmp_path / "catalog.json").write_text(json.dumps(
        {"type": "Catalog", "id": "root", "links": [{"rel": "child", "href": "sub/collection.json"}]}))
    (item,) = find_items(StacSpec(url=str(tmp_path / "catalog.json")))
    assert item["id"] == "x" and item["assets"]["data"]["href"] == str(tmp_path / "sub" / "data" / "x.tif")
    assert {"rel": "self", "href": str(tmp_path / "sub" / "x.json")} in item["links"]


def test_malformed_documents_and_items_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CatalogError, match=r"bad.json is not JSON .*; give a STAC catalog"):
        find_items(StacSpec(url=str(bad)))
    broken = _item("broken", "2024-01-01T00:00:00Z")
    del broken["assets"]
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [broken]}))
    with pytest.raises(CatalogError, match=r"Item 'broken' of .* is malformed \(no assets\)"):
        find_items(StacSpec(url=str(bad)))
    no_time = _item("no_time", None)
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [no_time]}))
    with pytest.raises(CatalogError, match=r"Item 'no_time' of .* is malformed") as exc:
        find_items(StacSpec(url=str(bad)))
    assert "\n" not in str(exc.value)
    with pytest.raises(CatalogError, match=r"cannot read .*missing.json"):
        find_items(StacSpec(url=str(tmp_path / "missing.json")))


def test_an_unreachable_api_is_one_line_at_once():
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there: a closed port
    with pytest.raises(CatalogError, match=r"no answer from .* \(connection refused"):
        find_items(StacSpec(url=url, timeout_s=5))


def test_an_api_that_never_answers_is_given_up_after_the_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.perf_counter()
        with pytest.raises(CatalogError, match=r"no answer from .* \(nothing within 1 s\)"):
            find_items(StacSpec(url=f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout_s=1))
        assert time.perf_counter() - started < 10


def test_static_catalog_in_object_storage_resolves_relative_links(s3_env, tmp_path):
    """A catalog on s3:// whose links and assets are relative: every href made an s3:// URL beside it."""
    (tmp_path / "x.json").write_text(json.dumps(_item("x", "2024-01-01T00:00:00Z")))
    (tmp_path / "catalog.json").write_text(json.dumps(
        {"type": "Catalog", "id": "root", "links": [{"rel": "item", "href": "./items/x.json"}]}))
    catalog = s3_env.upload(tmp_path / "catalog.json", "static/catalog.json")
    s3_env.upload(tmp_path / "x.json", "static/items/x.json")
    (item,) = find_items(StacSpec(url=catalog))
    bucket = catalog.split("/")[2]
    assert item["assets"]["data"]["href"] == f"s3://{bucket}/static/items/data/x.tif"
    assert {"rel": "self", "href": f"s3://{bucket}/static/items/x.json"} in item["links"]
