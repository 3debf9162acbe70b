"""Every shipped job runs, in tiny mode, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from geoseg_batch.cli import main

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _tiny(name: str, tmp_path: Path, **changes: object) -> Path:
    payload = yaml.safe_load((JOBS / name).read_text())
    for dotted, value in changes.items():
        node = payload
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    payload.pop("sweep", None) if "sweep" not in changes else None
    path = tmp_path / name
    path.write_text(yaml.safe_dump(payload))
    return path


def test_demo_job_tiny(tmp_path, capsys):
    job = _tiny("demo.yaml", tmp_path, out=str(tmp_path / "demo"), chips=48, size=32, scenes=1, tile=64,
                **{"train.epochs": 1, "model.depth": 2, "model.base_filters": 4, "cluster.workers": 1})
    assert main(["submit", str(job)]) == 0
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    output = manifest["outputs"][0]
    assert Path(output["bundle"]).exists() and Path(output["metrics"]).exists()
    assert len(output["scenes"]) == 1 and Path(output["scenes"][0]).exists()
    assert {"test_f1", "test_iou", "wall_s"} <= set(manifest["summary"])
    predictions = json.loads((Path(output["predictions"]) / "manifest.json").read_text())
    assert Path(predictions["outputs"][0]["mask_cog"]).exists()
    assert 0.0 <= manifest["summary"]["scene_f1"]["scene_1.tif"] <= 1.0
    assert Path(output["mosaic"]).exists()
    report = Path(output["report"]).read_text()
    assert report.count("data:image/png;base64,") >= 5 and "mosaic" in report  # scene, probabilities, mask, mosaic


def test_train_and_evaluate_jobs_tiny(tmp_path, chips_dir, capsys):
    train = _tiny("train_landslide4sense.yaml", tmp_path, out=str(tmp_path / "l4s"), **{
        "data.path": str(chips_dir), "train.epochs": 1, "model.depth": 2, "model.base_filters": 4,
        "model.input_size": 32, "sweep": {"base_filters": [2, 4]}})
    assert main(["validate", str(train)]) == 0
    assert main(["submit", str(train)]) == 0
    results = (tmp_path / "l4s" / "results.csv").read_text().splitlines()
    assert len(results) == 3
    bundle = tmp_path / "l4s" / "runs" / "unet_f2_lr0.001_b8" / "model.keras"
    evaluate = _tiny("evaluate_landslide4sense.yaml", tmp_path, model=str(bundle), data=str(chips_dir),
                     out=str(tmp_path / "eval"))
    assert main(["submit", str(evaluate)]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["chips"] == 96


def test_predict_job_tiny(tmp_path, capsys):
    from tests.helpers import make_bundle, write_scene

    bundle = make_bundle(tmp_path / "m.keras", bands=14)
    scenes = [str(write_scene(tmp_path / f"scene_{n}.tif", (90, 130), bands=14, crs=crs, named=False))
              for n, crs in ((1, "EPSG:32633"), (2, "EPSG:4326"))]
    job = _tiny("predict_scene.yaml", tmp_path, scenes=scenes, model=str(bundle), out=str(tmp_path / "pred"),
                tile=64, **{"cluster.workers": 1})
    assert main(["validate", str(job)]) == 0
    assert main(["submit", str(job)]) == 0
    manifest = json.loads((tmp_path / "pred" / "manifest.json").read_text())
    assert [Path(o["scene"]).name for o in manifest["outputs"]] == ["scene_1.tif", "scene_2.tif"]
    for output in manifest["outputs"]:
        assert all(Path(output[k]).exists() for k in ("zarr", "mask_cog", "probability_cog", "polygons"))
    summary = manifest["summary"]
    assert summary["tiles_total"] == summary["tiles_computed"] == 12 and summary["megapixels"] == 0.023
    assert {"wall_s", "mpx_per_s", "peak_worker_rss_bytes", "tiles_skipped"} <= set(summary)


def _tiny_predictions(tmp_path: Path) -> tuple[Path, list[str]]:
    from tests.helpers import make_bundle, write_scene

    bundle = make_bundle(tmp_path / "m.keras", bands=14)
    scenes = [str(write_scene(tmp_path / f"scene_{n}.tif", (90, 130), bands=14, crs=crs, named=False, seed=n))
              for n, crs in ((1, "EPSG:32633"), (2, "EPSG:4326"))]
    return bundle, scenes


def test_mosaic_job_tiny(tmp_path, capsys):
    bundle, scenes = _tiny_predictions(tmp_path)
    predict = _tiny("predict_scene.yaml", tmp_path, scenes=scenes, model=str(bundle), out=str(tmp_path / "pred"),
                    tile=64, **{"cluster.workers": 1})
    assert main(["submit", str(predict)]) == 0
    job = _tiny("mosaic.yaml", tmp_path, predictions=[str(tmp_path / "pred")], out=str(tmp_path / "mosaic"),
                chunk=64, **{"cluster.workers": 1})
    assert main(["validate", str(job)]) == 0
    assert main(["submit", str(job)]) == 0
    manifest = json.loads((tmp_path / "mosaic" / "manifest.json").read_text())
    assert all(Path(manifest["outputs"][0][k]).exists() for k in ("zarr", "mask_cog", "probability_cog"))
    assert manifest["summary"]["scenes"] == 2 and manifest["summary"]["chunks_written"] >= 1


def test_nightly_job_tiny_redoes_only_what_is_new(tmp_path, capsys):
    from rasterio.transform import from_origin

    from geoseg_batch.geo.sources import chunks_touched
    from tests.helpers import make_bundle, write_scene

    bundle = make_bundle(tmp_path / "m.keras", bands=14)
    incoming = tmp_path / "incoming"
    incoming.mkdir()

    def drop(n: int, x: float, y: float) -> None:
        write_scene(incoming / f"scene_{n}.tif", (100, 90), bands=14, named=False, seed=n,
                    transform=from_origin(x, y, 10, 10))

    drop(1, 500000, 5200000)
    drop(2, 501000, 5200000)
    night = tmp_path / "nightly"
    job = _tiny("nightly_mosaic.yaml", tmp_path, out=str(night), **{"cluster.workers": 1})
    payload = yaml.safe_load(job.read_text())
    payload["steps"][0].update(scenes=[str(incoming / "scene_?.tif")], model=str(bundle), out=str(night / "pred"),
                               tile=64)
    payload["steps"][1].update(predictions=[str(night / "pred")], out=str(night / "mosaic"), chunk=64,
                               crs="EPSG:32633", resolution=10.0, bounds=[500000, 5197000, 502000, 5200000])
    job.write_text(yaml.safe_dump(payload))

    def run() -> tuple[dict, dict]:
        assert main(["submit", str(job)]) == 0
        return (json.loads((night / "pred" / "manifest.json").read_text())["summary"],
                json.loads((night / "mosaic" / "manifest.json").read_text())["summary"])

    predicted, mosaic = run()
    assert predicted["scenes_predicted"] == 2 and mosaic["chunks_total"] == 20
    first_mosaic = (night / "mosaic").resolve()

    drop(3, 500000, 5198000)
    predicted, mosaic = run()
    assert (predicted["scenes_predicted"], predicted["scenes_reused"]) == (1, 2)
    touched = chunks_touched(mosaic_grid_of(night / "mosaic"), [night / "pred" / "scene_3.zarr"])
    assert mosaic["chunks_written"] == len(touched) <= 6
    assert first_mosaic.exists() and (night / "mosaic").resolve() != first_mosaic  # published as a new version

    predicted, mosaic = run()  # nothing new
    assert predicted["scenes_predicted"] == 0 and predicted["tiles_computed"] == 0 and "phases" not in predicted
    assert mosaic["chunks_written"] == 0
    assert len(list((night / "history").glob("*.json"))) == 3


def mosaic_grid_of(mosaic_dir: Path):
    from geoseg_batch.geo.sources import store_grid

    return store_grid(mosaic_dir / "mosaic.zarr")
