"""The nightly run driven by a STAC API (jobs/nightly_stac.yaml on ``rustac serve``): night 1 predicts the two
Items there are; an Item added is all night 2 predicts, and the mosaic rewrites only the chunks it touches;
night 3 finds nothing new and loads no model; an Item deleted from the API leaves the mosaic on night 4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from geoseg_batch.cli import main
from geoseg_batch.geo.sources import chunks_touched, store_grid

from tests.stac.items import RGB, RGB_BANDS, asset_json, cog, item_json

JOB = Path(__file__).resolve().parents[2] / "jobs" / "nightly_stac.yaml"
PIECES = {"piece_a": (0, 0), "piece_b": (391, 0), "piece_c": (0, 318)}  # column, row of 400 x 400 windows
WHEN = {"piece_a": "2024-06-01T10:00:00Z", "piece_b": "2024-06-02T10:00:00Z", "piece_c": "2024-06-03T10:00:00Z"}


def _piece(s3, work: Path, name: str) -> dict:
    """An Item of one 400 x 400 window of RGB.byte.tif (one 3-band COG asset on the bucket)."""
    column, row = PIECES[name]
    path = cog(RGB, work / f"{name}.tif", "-srcwin", str(column), str(row), "400", "400")
    asset = asset_json(s3.upload(path, f"stac/nightly/{name}.tif"), path, RGB_BANDS, f"RGB.byte {name}")
    return item_json(name, {"image": asset}, {"image": path}, when=WHEN[name])


def _job(tmp_path: Path, api_url: str, collection: str, bundle: Path) -> Path:
    with rasterio.open(RGB) as src:
        left, bottom, right, top = src.bounds
        resolution = src.res[0]
    payload = yaml.safe_load(JOB.read_text())
    night = tmp_path / "nightly"
    predict, mosaic = payload["steps"]
    predict.update(model=str(bundle), out=str(night / "predictions"), tile=128,
                   stac={"url": api_url, "collections": [collection]})
    predict.pop("storage")  # the loopback server's endpoint and keys come from the environment (s3_env)
    mosaic.update(predictions=[str(night / "predictions")], out=str(night / "mosaic"), crs="EPSG:32618",
                  resolution=resolution, bounds=[left, bottom, right, top], chunk=128)
    payload.update(out=str(night), cluster={"workers": 1})
    path = tmp_path / "nightly_stac.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


@pytest.mark.realdata  # its Items are windows of ../shared/data's RGB.byte.tif
def test_nightly_from_stac_redoes_only_what_changed(stac_api, rgb_bundle, s3_server, s3_env, tmp_path):
    pieces = {name: _piece(s3_server, tmp_path, name) for name in PIECES}
    stac_api.add_collection("nightly", [pieces["piece_a"], pieces["piece_b"]])
    job = _job(tmp_path, stac_api.url, "nightly", rgb_bundle)
    night = tmp_path / "nightly"

    def run() -> tuple[dict, dict]:
        assert main(["submit", str(job)]) == 0
        return (json.loads((night / "predictions" / "manifest.json").read_text())["summary"],
                json.loads((night / "mosaic" / "manifest.json").read_text())["summary"])

    predicted, mosaic = run()  # night 1: two Items
    assert (predicted["scenes"], predicted["scenes_predicted"]) == (2, 2) and mosaic["chunks_written"] >= 1
    grid = store_grid(night / "mosaic" / "mosaic.zarr")
    stac_api.add_item("nightly", pieces["piece_c"])
    predicted, mosaic = run()  # night 2: the Item added, and only the chunks it touches
    assert (predicted["scenes_predicted"], predicted["scenes_reused"]) == (1, 2)
    touched = chunks_touched(grid, [night / "predictions" / "piece_c.zarr"])
    assert 0 < mosaic["chunks_written"] == len(touched) < mosaic["chunks_total"]
    predicted, mosaic = run()  # night 3: nothing new, no model work
    assert predicted["scenes_predicted"] == 0 and predicted["tiles_computed"] == 0 and "phases" not in predicted
    assert mosaic["chunks_written"] == 0
    before = _mask(night)
    stac_api.delete_item("nightly", "piece_b")
    predicted, mosaic = run()  # night 4: the Item deleted leaves the predictions and the mosaic
    assert predicted["scenes"] == 2 and not (night / "predictions" / "piece_b.zarr").exists()
    gone = chunks_touched(grid, [_kept_store(tmp_path, "piece_b")])
    assert 0 < mosaic["chunks_written"] <= len(gone)
    after, inside = _mask(night), _inside_pieces(night)
    only_b = inside["piece_b"] & ~inside["piece_a"] & ~inside["piece_c"] & (before != 255)  # B's valid pixels
    assert only_b.any() and (after[only_b] == 255).all()  # nodata where only B was
    assert np.array_equal(before[~inside["piece_b"]], after[~inside["piece_b"]])  # the rest as it was
    records = sorted((night / "history").glob("*.json"))
    assert len(records) == 4


def _mask(night: Path) -> np.ndarray:
    with rasterio.open(night / "mosaic" / "mosaic_mask.tif") as src:
        return src.read(1)


def _kept_store(tmp_path: Path, stem: str) -> Path:
    """The zarr store of ``stem`` in the oldest version of the predictions still kept (it held piece B)."""
    versions = sorted((tmp_path / "nightly" / ".predictions.versions").iterdir())
    return next(v / f"{stem}.zarr" for v in versions if (v / f"{stem}.zarr").exists())


def _inside_pieces(night: Path) -> dict[str, np.ndarray]:
    """{piece: mosaic pixels inside its window of RGB.byte.tif}."""
    from rasterio.windows import Window, transform as window_transform

    with rasterio.open(night / "mosaic" / "mosaic_mask.tif") as mosaic, rasterio.open(RGB) as scene:
        rows, cols = np.indices(mosaic.shape)
        xs, ys = rasterio.transform.xy(mosaic.transform, rows.ravel(), cols.ravel())
        inside = {}
        for name, (column, row) in PIECES.items():
            piece = window_transform(Window(column, row, 400, 400), scene.transform)
            r, c = (np.asarray(v).reshape(mosaic.shape) for v in rasterio.transform.rowcol(piece, xs, ys))
            inside[name] = (r >= 0) & (r < 400) & (c >= 0) & (c < 400)
    return inside
