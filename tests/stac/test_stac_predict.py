"""predict --stac against a real STAC API (``rustac serve``) whose Items' assets sit on the loopback S3 server:
the same outputs as predicting the equivalent local files, and the one-line errors of bad Items and empty
searches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import zarr

from geoseg_batch.cli import main


def _arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def test_predict_stac_equals_predicting_the_local_files(stac_api, stac_collection, stac_items, rgb_bundle, s3_env,
                                                       tmp_path, capsys):
    common = ["--model", str(rgb_bundle), "--tile", "256", "--workers", "1"]
    assert main(["predict", "--stac", stac_api.url, "--collection", stac_collection, "--out", "from_stac",
                 *common]) == 0
    printed = capsys.readouterr().out
    local = [str(scene.local) for scene in stac_items.values()]
    assert main(["predict", *local, "--bands", "1,2,3", "--out", "from_files", *common]) == 0
    manifest = json.loads((tmp_path / "from_stac" / "manifest.json").read_text())
    scenes = {Path(entry["zarr"]).stem: entry["scene"] for entry in manifest["outputs"]}
    assert scenes == {name: stac_api.item_url(stac_collection, name) for name in stac_items}  # named by their Items
    assert stac_api.item_url(stac_collection, "per_band") in printed
    for name in stac_items:  # utm_multiband: EPSG:32618; wgs84: EPSG:4326, 3 of 4 bands; per_band: 300 + 600 m
        expected, got = _arrays(tmp_path / "from_files" / f"{name}.zarr"), _arrays(tmp_path / "from_stac" / f"{name}.zarr")
        assert expected.keys() == got.keys() and {"mask", "probabilities"} <= set(got)
        for array in expected:
            np.testing.assert_array_equal(got[array], expected[array], err_msg=f"{name}: {array}")
        for cog in (f"{name}_mask.tif", f"{name}_probabilities.tif"):
            with rasterio.open(tmp_path / "from_files" / cog) as a, rasterio.open(tmp_path / "from_stac" / cog) as b:
                assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape), cog
                np.testing.assert_array_equal(a.read(), b.read(), err_msg=cog)
    with rasterio.open(tmp_path / "from_stac" / "wgs84_mask.tif") as wgs84:
        assert wgs84.crs.to_epsg() == 4326
    state = json.loads((tmp_path / "from_stac" / "state.json").read_text())
    assert state["per_band"]["item"]["id"] == "per_band" and state["per_band"]["item"]["checksum"].startswith("stac:")
    assert state["per_band"]["item"]["updated"] == stac_items["per_band"].item["properties"]["updated"]


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_an_item_lacking_a_band_names_the_bands_found_and_the_mapping(stac_api, stac_items, rgb_bundle, s3_env,
                                                                     tmp_path, capsys, request):
    item = json.loads(json.dumps(stac_items["per_band"].item))
    item["id"] = "no_blue"
    item["assets"]["B02"] = item["assets"].pop("blue")
    item["assets"]["B02"]["eo:bands"] = [{"name": "B02"}]
    collection = "lacking-" + request.node.name[-20:].lower().replace("_", "-")
    stac_api.add_collection(collection, [item])
    common = ["--stac", stac_api.url, "--collection", collection, "--model", str(rgb_bundle), "--workers", "1"]
    assert main(["predict", *common, "--out", "out"]) == 2
    line = _last_line(capsys)
    assert line.startswith("geoseg-batch: error: stac: Item 'no_blue' has no band named blue")
    assert "red, green, B02" in line and "--assets blue=ASSET" in line
    assert not (tmp_path / "out").exists()
    assert main(["predict", *common, "--assets", "blue=B02", "--tile", "256", "--out", "out"]) == 0  # the fix


def test_a_search_that_matches_nothing(stac_api, stac_collection, rgb_bundle, s3_env, tmp_path, capsys):
    common = ["--stac", stac_api.url, "--collection", stac_collection, "--datetime", "2030-01-01/..",
              "--model", str(rgb_bundle), "--workers", "1", "--out", "out"]
    assert main(["predict", *common]) == 2  # a one-off run: nothing to predict is an error
    line = _last_line(capsys)
    assert "matched no Items" in line and "datetime 2030-01-01/.." in line and "widen bbox or datetime" in line
    assert main(["predict", *common, "--incremental"]) == 0  # a nightly run: nothing new, nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
