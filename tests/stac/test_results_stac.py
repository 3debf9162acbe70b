"""Results as STAC: the Items of predicted scenes and of a mosaic, the bundle's MLM Item, the static collection in
the published results, read back with pystac (extension fields through pystac's extension classes, against the
stores' actual grids), loaded with odc-stac, validated by `rustac validate` (core schema: offline, the extension
schemas cannot be fetched), and posted to a STAC API with the Transactions extension."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.mlm import MLMExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

from geoseg_batch import mosaic, predict_scene
from geoseg_batch.errors import StacApiError
from geoseg_batch.version import __version__
from tests.helpers import local_client, make_bundle, write_scene
from tests.stac.server import core_schema_errors, free_port, rustac_command


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster (threads)."""
    with local_client(2, processes=False) as c:
        yield c


@pytest.fixture(scope="module")
def runs(tmp_path_factory, client):
    """A predict output of two scenes (UTM with polygons, and EPSG:4326) and a mosaic of it."""
    root = tmp_path_factory.mktemp("stac")
    bundle = make_bundle(root / "m.keras")
    scenes = [write_scene(root / "utm.tif", (150, 210)), write_scene(root / "geo.tif", (130, 170), crs="EPSG:4326",
                                                                      seed=1)]
    predicted = predict_scene(scenes, bundle, root / "pred", tile=128, polygons=True, client=client)
    mosaicked = mosaic([root / "pred"], root / "mos", client=client, crs="EPSG:32633", resolution=20)
    return {"root": root, "bundle": bundle, "scenes": scenes, "predict": predicted, "mosaic": mosaicked}


def _grid(cog: Path) -> tuple[rasterio.crs.CRS, list[float], list[int]]:
    with rasterio.open(cog) as src:
        return src.crs, list(src.transform)[:6], [src.height, src.width]


def test_each_predicted_scene_has_an_item_on_its_grid(runs):
    out, manifest = runs["root"] / "pred", json.loads(Path(runs["predict"].manifest).read_text())
    for stem in ("utm", "geo"):
        item = pystac.read_file(out / "stac" / stem / f"{stem}.json")
        assert isinstance(item, pystac.Item) and item.id == stem and item.collection_id == "predict"
        crs, transform, shape = _grid(out / f"{stem}_mask.tif")
        proj = ProjectionExtension.ext(item)
        assert proj.epsg == crs.to_epsg() and proj.shape == shape
        assert np.allclose(proj.transform, transform, rtol=0, atol=1e-9)
        with rasterio.open(out / f"{stem}_mask.tif") as src:
            assert np.allclose(proj.bbox, list(src.bounds), rtol=0, atol=1e-6)
            lon_lat = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        assert np.allclose(item.bbox, lon_lat, rtol=0, atol=1e-6)  # WGS 84 footprint
        for key, name in (("zarr", f"{stem}.zarr"), ("mask", f"{stem}_mask.tif"),
                          ("probabilities", f"{stem}_probabilities.tif"), ("polygons", f"{stem}_polygons.gpkg")):
            assert Path(item.assets[key].get_absolute_href()) == out / name, key
            assert not item.assets[key].href.startswith("/"), "hrefs inside the version are relative"
        assert item.assets["zarr"].media_type == "application/vnd+zarr"
        assert item.assets["mask"].media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
        mask_band, = RasterExtension.ext(item.assets["mask"]).bands
        assert (mask_band.data_type, mask_band.nodata) == ("uint8", 255)
        probability_band, = RasterExtension.ext(item.assets["probabilities"]).bands  # binary: one band
        assert probability_band.data_type == "uint8" and probability_band.scale == pytest.approx(1 / 250)
        with rasterio.open(out / f"{stem}_probabilities.tif") as src:
            assert src.scales[0] == pytest.approx(probability_band.scale) and src.nodata == probability_band.nodata
        classes = ClassificationExtension.ext(item.assets["mask"]).classes
        assert [(c.value, c.name) for c in classes if not c.nodata] == [(0, "background"), (1, "landslide")]
        assert [c.value for c in classes if c.nodata] == [255]
        props = item.properties
        assert props["processing:software"] == {"geoseg-batch": __version__}
        assert props["geoseg:model_checksum"] == manifest["checksums"][str(runs["bundle"])]
        assert (props["geoseg:stitch"], props["geoseg:precision"]) == ("exact", "float32")
        assert props["geoseg:scene"] == str(runs["root"] / f"{stem}.tif")  # a scene file: its location recorded
        assert item.datetime is not None


def test_scene_items_link_the_bundle_mlm_item(runs):
    out = runs["root"] / "pred"
    item = pystac.read_file(out / "stac" / "utm" / "utm.json")
    link, = [link for link in item.links if link.rel == "derived_from"]  # a scene file: no input Item
    assert link.extra_fields["mlm:name"] == "m" and link.extra_fields["processing:level"] == "L4"
    model = pystac.read_file(link.get_absolute_href())
    mlm = MLMExtension.ext(model)
    assert (mlm.mlm_name, mlm.architecture, mlm.framework) == ("m", "U-Net", "Keras")
    assert mlm.tasks == ["semantic-segmentation"]
    model_input, = mlm.input
    assert model_input.bands == ["b1", "b2", "b3"] and model_input.input.shape == [-1, -1, -1, 3]
    assert [s["mean"] for s in model_input.properties["value_scaling"]] == [100.0] * 3
    output, = mlm.output
    assert [(c.value, c.name) for c in output.classes] == [(0, "background"), (1, "landslide")]
    assert output.result.shape[-1] == 1  # binary: one sigmoid channel
    asset = model.assets["model"]
    assert "mlm:model" in asset.roles and Path(asset.href) == runs["bundle"]
    assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(runs["bundle"].read_bytes()).hexdigest()
    assert model.properties["geoseg:model_checksum"] == item.properties["geoseg:model_checksum"]


def test_the_collection_is_published_with_the_results(runs):
    out, summary = runs["root"] / "pred", runs["predict"].summary
    assert summary["stac"] == str(out / "stac" / "collection.json")
    manifest = json.loads(Path(runs["predict"].manifest).read_text())
    assert manifest["summary"]["stac"] == summary["stac"]
    collection = pystac.read_file(summary["stac"])
    assert isinstance(collection, pystac.Collection) and collection.id == "predict"
    items = {item.id: item for item in collection.get_items()}
    assert set(items) == {"utm", "geo", next(i for i in items if i.startswith("model-"))}
    west, south, east, north = collection.extent.spatial.bboxes[0]
    for item in (items["utm"], items["geo"]):
        assert west <= item.bbox[0] and south <= item.bbox[1] and item.bbox[2] <= east and item.bbox[3] <= north
    start, end = collection.extent.temporal.intervals[0]
    assert start <= items["utm"].datetime <= end


def test_the_mosaic_item_loads_with_odc_stac_on_the_mosaic_grid(runs):
    import odc.stac

    out = runs["root"] / "mos"
    assert runs["mosaic"].summary["stac"] == str(out / "stac" / "collection.json")
    item = pystac.read_file(out / "stac" / "mosaic" / "mosaic.json")
    crs, transform, shape = _grid(out / "mosaic_mask.tif")
    proj = ProjectionExtension.ext(item)
    assert proj.epsg == 32633 and proj.shape == shape and np.allclose(proj.transform, transform, atol=1e-9)
    loaded = odc.stac.load([item], bands=["mask"], chunks={})
    assert loaded.odc.geobox.crs == crs and loaded.odc.geobox.shape == tuple(shape)
    assert np.allclose(list(loaded.odc.geobox.affine)[:6], transform, rtol=0, atol=1e-9)
    with rasterio.open(out / "mosaic_mask.tif") as src:
        np.testing.assert_array_equal(loaded["mask"].isel(time=0).values, src.read(1))
    sources = {Path(link.get_absolute_href()) for link in item.links if link.rel == "derived_from"
               and "mlm:name" not in link.extra_fields}
    pred = runs["root"] / "pred" / "stac"
    assert sources == {pred / "utm" / "utm.json", pred / "geo" / "geo.json"}
    scene = pystac.read_file(pred / "utm" / "utm.json")
    assert item.common_metadata.start_datetime <= scene.datetime <= item.common_metadata.end_datetime
    model_link, = [link for link in item.links if "mlm:name" in link.extra_fields]
    assert Path(model_link.get_absolute_href()).exists()


def test_an_incremental_run_publishes_its_own_collection_keeping_reused_scenes_times(runs, client):
    out = runs["root"] / "pred_incremental"
    first = predict_scene(runs["scenes"][:1], runs["bundle"], out, tile=128, incremental=True, client=client)
    before = json.loads((out / "stac" / "utm" / "utm.json").read_text())
    time.sleep(1.1)  # Items are dated to the second
    second = predict_scene(runs["scenes"], runs["bundle"], out, tile=128, incremental=True, client=client)
    assert second.summary["scenes_reused"] == 1 and second.summary["stac"] == first.summary["stac"]
    collection = pystac.read_file(second.summary["stac"])  # out: the link to the new version
    assert {item.id for item in collection.get_items()} >= {"utm", "geo"}
    reused, new = (pystac.read_file(out / "stac" / stem / f"{stem}.json") for stem in ("utm", "geo"))
    assert reused.properties["geoseg:key"] == before["properties"]["geoseg:key"]
    assert reused.datetime == pystac.utils.str_to_datetime(before["properties"]["datetime"])
    assert new.datetime > reused.datetime


def _written_json(runs) -> list[Path]:
    return sorted((runs["root"] / "pred" / "stac").rglob("*.json")) + sorted((runs["root"] / "mos" / "stac")
                                                                             .rglob("*.json"))


@pytest.mark.skipif(rustac_command() is None, reason="rustac CLI not installed (the test extra)")
def test_rustac_validates_the_written_items_against_the_core_schema(runs, tmp_path):
    """Offline `rustac validate` fails on the extension schemas (it fetches them); a copy without
    ``stac_extensions`` is validated against the core schema, which rustac carries."""
    for path in _written_json(runs):
        assert core_schema_errors(json.loads(path.read_text()), tmp_path) == "", path
    broken = json.loads((runs["root"] / "pred" / "stac" / "utm" / "utm.json").read_text())
    del broken["properties"]["datetime"]  # the core schema requires a datetime (or a range)
    assert "anyOf" in core_schema_errors(broken, tmp_path)  # the validator really checks, offline


def test_a_scene_from_stac_links_and_dates_from_its_input_item():
    from odc.geo.geobox import GeoBox

    from geoseg_batch.stac.results import Provenance, scene_item

    geobox = GeoBox.from_bbox((500000, 5190000, 510000, 5200000), "EPSG:32633", resolution=10)
    source = {"type": "Feature", "id": "S2A_1", "properties": {"datetime": "2024-05-01T10:20:30Z"},
              "links": [{"rel": "self", "href": "https://stac.example/collections/s2/items/S2A_1"}]}
    provenance = Provenance(("background", "landslide"), "sha256:ab", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                            float_output=True)
    item = scene_item("S2A_1", geobox, {"mask": "/o/S2A_1_mask.tif", "probabilities": "/o/S2A_1_probabilities.tif"},
                      provenance, source, "https://stac.example/collections/s2/items/S2A_1")
    assert item.datetime == dt.datetime(2024, 5, 1, 10, 20, 30, tzinfo=dt.timezone.utc)
    link, = [link for link in item.links if link.rel == "derived_from"]
    assert link.href == "https://stac.example/collections/s2/items/S2A_1"
    band, = RasterExtension.ext(item.assets["probabilities"]).bands  # --float: float32, NaN nodata
    assert band.data_type == "float32" and band.nodata == "nan" and band.scale is None
    ranged = {**source, "properties": {"datetime": None, "start_datetime": "2024-05-01T00:00:00Z",
                                       "end_datetime": "2024-05-02T00:00:00Z"}}
    item = scene_item("S2A_1", geobox, {}, provenance, ranged, "x")
    assert item.datetime is None and item.common_metadata.end_datetime.day == 2


class _TransactionsApi(BaseHTTPRequestHandler):
    """An in-memory STAC API with the Transactions extension (collections, items: POST, PUT, GET): `rustac serve`
    answers 405 to transactions, so the tests' server that accepts them is this one (real HTTP on 127.0.0.1)."""

    collections: dict = {}
    items: dict = {}
    requests: list = []

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        self.requests.append(("GET", self.path))
        if len(parts) == 2 and parts[0] == "collections" and parts[1] in self.collections:
            return self._answer(200, self.collections[parts[1]])
        return self._answer(404, {"code": "NotFound"})

    def do_POST(self):
        parts, body = self.path.strip("/").split("/"), self._body()
        self.requests.append(("POST", self.path))
        if parts == ["collections"]:
            if body["id"] in self.collections:
                return self._answer(409, {"code": "Conflict"})
            self.collections[body["id"]] = body
            return self._answer(201, body)
        if len(parts) == 3 and parts[2] == "items" and parts[1] in self.collections:
            key = (parts[1], body["id"])
            if key in self.items:
                return self._answer(409, {"code": "Conflict", "description": f"{body['id']} exists"})
            self.items[key] = body
            return self._answer(201, body)
        return self._answer(404, {"code": "NotFound"})

    def do_PUT(self):
        parts, body = self.path.strip("/").split("/"), self._body()
        self.requests.append(("PUT", self.path))
        if len(parts) == 4 and (parts[1], parts[3]) in self.items:
            self.items[(parts[1], parts[3])] = body
            return self._answer(200, body)
        return self._answer(404, {"code": "NotFound"})


@pytest.fixture()
def transactions_api():
    """The URL of an in-memory Transactions API on 127.0.0.1 (a free port), stopped after the test."""
    handler = type("Api", (_TransactionsApi,), {"collections": {}, "items": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_mosaic_items_are_posted_created_then_replaced(runs, client, transactions_api):
    url, api = transactions_api
    out = runs["root"] / "mos_posted"
    first = mosaic([runs["root"] / "pred"], out, client=client, crs="EPSG:32633", resolution=20, stac_api=url,
                   stac_collection="nightly")
    assert first.summary["stac_api"] == {"url": url, "collection": "nightly", "collection_created": True,
                                         "items_created": 1, "items_updated": 0}
    posted = api.items[("nightly", "mosaic")]
    assert posted["assets"]["mask"]["href"] == str(out / "mosaic_mask.tif")  # absolute in the API
    assert not [link for link in posted["links"] if link["rel"] in ("root", "parent", "self")]
    assert api.collections["nightly"]["extent"]["spatial"]["bbox"][0] == pytest.approx(posted["bbox"])
    second = mosaic([runs["root"] / "pred"], out, client=client, crs="EPSG:32633", resolution=20, stac_api=url,
                    stac_collection="nightly", overwrite=True)
    assert second.summary["stac_api"]["items_updated"] == 1 and second.summary["stac_api"]["items_created"] == 0
    assert ("PUT", "/collections/nightly/items/mosaic") in api.requests
    assert json.loads(Path(second.manifest).read_text())["summary"]["stac_api"]["items_updated"] == 1


def test_an_unreachable_api_is_one_line_in_bounded_time_and_nothing_is_published(runs, client):
    out = runs["root"] / "mos_unreachable"
    started = time.perf_counter()
    with pytest.raises(StacApiError) as raised:
        mosaic([runs["root"] / "pred"], out, client=client, crs="EPSG:32633", resolution=20,
               stac_api=f"http://127.0.0.1:{free_port()}")
    assert time.perf_counter() - started < 60
    message = str(raised.value)
    assert "\n" not in message and "stac_api" in message and "Transactions" in message, message
    assert raised.value.exit_code == 2
    assert not out.exists()  # the run published nothing: the Items would have pointed at it


def test_an_api_without_transactions_is_one_line_naming_the_extension(stac_api):  # rustac serve: no Transactions
    from geoseg_batch.stac.transactions import post_items

    collection = {"type": "Collection", "stac_version": "1.1.0", "id": "c", "description": "d", "license": "other",
                  "extent": {"spatial": {"bbox": [[0, 0, 1, 1]]}, "temporal": {"interval": [[None, None]]}},
                  "links": []}
    with pytest.raises(StacApiError) as raised:
        post_items(stac_api.url, collection, [], timeout_s=10)
    message = str(raised.value)
    assert "\n" not in message and "405" in message and "Transactions extension" in message, message


def test_an_api_that_never_answers_fails_within_the_timeout():
    from geoseg_batch.stac.transactions import post_items

    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        started = time.perf_counter()
        with pytest.raises(StacApiError) as raised:
            post_items(f"http://127.0.0.1:{silent.getsockname()[1]}", {"id": "c"}, [], timeout_s=1)
        assert time.perf_counter() - started < 10
    message = str(raised.value)
    assert "\n" not in message and "waits at most 1 s" in message and "GET" in message, message


def test_the_stac_api_error_is_a_runtime_error_of_exit_code_2_and_pickles():
    import pickle

    error = StacApiError("stac_api: POST http://x/collections answered 405; expected 201")
    assert isinstance(error, RuntimeError) and not isinstance(error, OSError) and error.exit_code == 2
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
