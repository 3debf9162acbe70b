"""mosaic and the nightly pipeline on the loopback S3 server: predictions read through their pointer, the mosaic
published as versions behind its own, incremental runs rewriting only what a new scene touches, results bitwise
equal to a local mosaic of the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from rasterio.transform import from_origin

from geoseg_batch.cli import main
from geoseg_batch.io.object_storage import current_version
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import ObjectPath

from tests.helpers import make_bundle, write_scene

JOBS = Path(__file__).resolve().parents[2] / "jobs"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "m.keras", bands=14)


def _arrays(store: str, options: dict | None = None) -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r", storage_options=options)
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def _manifest(prefix: str) -> tuple[ObjectPath, dict]:
    """(current version, its manifest) of the output prefix ``prefix``, read through its pointer."""
    version = current_version(ObjectPath(prefix))
    assert version is not None, f"{prefix}: nothing published"
    return version, json.loads(CloudSettings.of().filesystem("s3").cat_file(f"{version.key}/manifest.json"))


def _nightly_job(tmp_path: Path, bundle: Path, root: str, endpoint: str) -> Path:
    """The shipped object-storage nightly job, tiny, with its scenes, both step outputs and its history under
    ``root`` on the store at ``endpoint``."""
    payload = yaml.safe_load((JOBS / "nightly_mosaic_s3.yaml").read_text())
    payload.update(out=f"{root}/history", cluster={"workers": 1}, storage={"endpoint_url": endpoint})
    for step in payload["steps"]:
        step["storage"] = {"endpoint_url": endpoint}
    payload["steps"][0].update(scenes=[f"{root}/incoming/scene_?.tif"], model=str(bundle), out=f"{root}/pred",
                               tile=64)
    payload["steps"][1].update(predictions=[f"{root}/pred"], out=f"{root}/mosaic", chunk=64, crs="EPSG:32633",
                               resolution=10.0, bounds=[500000, 5197000, 502000, 5200000])
    job = tmp_path / "nightly.yaml"
    job.write_text(yaml.safe_dump(payload))
    return job


def test_nightly_pipeline_on_s3_redoes_only_what_is_new(tmp_path, s3_env, bundle):
    from geoseg_batch.geo.sources import chunks_touched, store_grid

    root = f"s3://{s3_env.bucket}/nightly"

    def drop(n: int, x: float, y: float) -> None:
        scene = write_scene(tmp_path / f"scene_{n}.tif", (100, 90), bands=14, named=False, seed=n,
                            transform=from_origin(x, y, 10, 10))
        s3_env.upload(scene, f"nightly/incoming/scene_{n}.tif")

    drop(1, 500000, 5200000)
    drop(2, 501000, 5200000)
    job = _nightly_job(tmp_path, bundle, root, s3_env.endpoint)
    assert main(["validate", str(job)]) == 0
    assert main(["submit", str(job)]) == 0
    pred_v1, predicted = _manifest(f"{root}/pred")
    mosaic_v1, mosaic = _manifest(f"{root}/mosaic")
    assert predicted["summary"]["scenes_predicted"] == 2 and mosaic["summary"]["chunks_total"] == 20
    assert mosaic["outputs"][0]["zarr"] == f"{mosaic_v1}/mosaic.zarr"
    workers = mosaic["summary"]["chunks_per_worker"]  # chunks read and written on the cluster's workers
    assert workers and all(address.startswith("tcp://") for address in workers), workers
    options = CloudSettings.of().storage_options()
    first = _arrays(f"{mosaic_v1}/mosaic.zarr", options)

    drop(3, 500000, 5198000)
    assert main(["submit", str(job)]) == 0
    pred_v2, predicted = _manifest(f"{root}/pred")
    mosaic_v2, mosaic = _manifest(f"{root}/mosaic")
    assert (predicted["summary"]["scenes_predicted"], predicted["summary"]["scenes_reused"]) == (1, 2)
    cloud = CloudSettings.of()
    touched = chunks_touched(store_grid(f"{mosaic_v2}/mosaic.zarr", cloud), [f"{pred_v2}/scene_3.zarr"], cloud)
    assert mosaic["summary"]["chunks_written"] == len(touched) < mosaic["summary"]["chunks_total"]
    assert mosaic["summary"]["incremental"] is True
    assert (pred_v2, mosaic_v2) != (pred_v1, mosaic_v1) and pred_v2 != pred_v1 and mosaic_v2 != mosaic_v1
    # the old versions are still complete: what a reader that followed the old pointer reads is unchanged
    old = _arrays(f"{mosaic_v1}/mosaic.zarr", options)
    assert old.keys() == first.keys() and all(np.array_equal(old[k], first[k]) for k in first)
    fs = cloud.filesystem("s3")
    assert fs.exists(f"{pred_v1.key}/manifest.json") and fs.exists(f"{pred_v1.key}/scene_1.zarr/.zmetadata")
    assert fs.exists(f"{mosaic_v2.key}/report.html") and fs.exists(f"{mosaic_v2.key}/mosaic_mask.tif")
    history = [p for p in fs.ls(f"{s3_env.bucket}/nightly/history/history", refresh=True) if p.endswith(".json")]
    assert len(history) == 2
    report = fs.cat_file(f"{s3_env.bucket}/nightly/history/report.html").decode()
    mosaic_images = len(fs.glob(f"{mosaic_v2.key}/report/*.png"))
    predict_images = len(fs.glob(f"{pred_v2.key}/report/*.png"))
    assert mosaic_images >= 1 and predict_images >= 3
    assert report.count("data:image/png;base64,") == mosaic_images + predict_images, "the steps' quicklooks"
    assert fs.exists(f"{s3_env.bucket}/nightly/history/manifest.json")

    # the same predictions, downloaded and mosaicked locally: bitwise the incremental S3 mosaic
    local_pred = tmp_path / "pred"
    fs.get(f"{pred_v2.key}/", str(local_pred), recursive=True)
    assert main(["mosaic", str(local_pred), "--out", str(tmp_path / "local_mosaic"), "--chunk", "64", "--crs",
                 "EPSG:32633", "--resolution", "10", "--bounds", "500000", "5197000", "502000", "5200000",
                 "--workers", "1", "--no-cog"]) == 0
    expected, got = _arrays(str(tmp_path / "local_mosaic" / "mosaic.zarr")), _arrays(f"{mosaic_v2}/mosaic.zarr",
                                                                                        options)
    assert expected.keys() == got.keys() and {"mask", "probabilities"} <= set(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_files_key_of_a_store_on_s3_reads_no_chunk(tmp_path, s3_env):
    """A bare store's content key comes from its objects' listing (ETags, sizes): no chunk is downloaded, and a
    rewritten chunk changes the key."""
    from geoseg_batch.runs.predictions import files_key

    local = tmp_path / "bare.zarr"
    group = zarr.open_group(str(local), mode="w", zarr_format=2)
    group.create_array("mask", shape=(8, 8), chunks=(4, 4), dtype="uint8", fill_value=255)[...] = 1
    fs = CloudSettings.of().filesystem("s3")
    fs.put(f"{local}/", f"{s3_env.bucket}/keyed/bare.zarr", recursive=True)
    url = f"s3://{s3_env.bucket}/keyed/bare.zarr"
    chunk_keys = [f"keyed/bare.zarr/mask/{r}.{c}" for r in range(2) for c in range(2)]
    before = [s3_env.served(k) for k in chunk_keys]
    key = files_key(url)
    assert [s3_env.served(k) for k in chunk_keys] == before, "listing only: no chunk read"
    assert files_key(url) == key
    fs.pipe_file(f"{s3_env.bucket}/keyed/bare.zarr/mask/0.0", b"other bytes")
    assert files_key(url) != key


def test_mosaic_of_an_empty_prefix_is_one_line(tmp_path, s3_env, capsys):
    """A prediction prefix holding nothing: exit 2 and one line naming it, before anything is written."""
    missing = f"s3://{s3_env.bucket}/no-predictions-here"
    out = f"s3://{s3_env.bucket}/mosaics/never"
    assert main(["mosaic", missing, "--out", out, "--workers", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and missing in error[0] and "not a predict output" in error[0]
    assert current_version(ObjectPath(out)) is None
