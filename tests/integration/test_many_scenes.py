"""Many scenes, one run: each scene's products are written while other scenes' tiles run, and the outputs are
the same, byte for byte, as each scene run alone; a killed many-scene run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from geoseg_batch import predict_scene
from tests.helpers import local_client, make_bundle, write_scene

SHAPES = {"scene_a": (200, 260), "scene_b": (128, 128), "scene_c": (300, 180)}


@pytest.fixture(scope="module")
def cluster_client():
    with local_client(2, processes=False) as client:
        yield client


def _assert_same_outputs(a: Path, b: Path, stem: str) -> None:
    """The scene's zarr arrays and COG files are equal byte for byte, its polygons row for row."""
    import geopandas as gpd

    for variable in ("probabilities", "mask"):
        first = zarr.open_group(str(a / f"{stem}.zarr"), mode="r")[variable]
        second = zarr.open_group(str(b / f"{stem}.zarr"), mode="r")[variable]
        assert first.dtype == second.dtype and first.chunks == second.chunks
        np.testing.assert_array_equal(first[:], second[:])
    for name in (f"{stem}_mask.tif", f"{stem}_probabilities.tif"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    polygons = [gpd.read_file(d / f"{stem}_polygons.gpkg") for d in (a, b)]
    assert len(polygons[0]) > 0
    assert polygons[0].drop(columns="geometry").equals(polygons[1].drop(columns="geometry"))
    assert polygons[0].geometry.geom_equals_exact(polygons[1].geometry, 0).all()


@pytest.mark.cluster
def test_many_scenes_in_one_run_give_the_outputs_of_each_scene_run_alone(tmp_path, cluster_client):
    bundle = make_bundle(tmp_path / "m.keras")
    scenes = [write_scene(tmp_path / f"{stem}.tif", shape, seed=n) for n, (stem, shape) in enumerate(SHAPES.items())]
    together = predict_scene(scenes, bundle, tmp_path / "together", tile=64, polygons=True, client=cluster_client)
    assert together.summary["scenes"] == 3 and together.summary["tiles_total"] == 20 + 4 + 15
    phases = together.summary["phases"]
    assert set(phases) == {"setup_s", "tiles_s", "cogs_s"} and min(phases.values()) >= 0
    # the report shows each scene's input (its quicklook drawn with its tiles) and outputs, scene after scene
    page = (tmp_path / "together" / "report.html").read_text()
    shown = [(stem, kind) for stem in SHAPES for kind in ("scene", "probabilities", "mask")]
    assert all((tmp_path / "together" / "report" / f"{stem}_{kind}.png").stat().st_size > 0 for stem, kind in shown)
    captions = [page.index(f"{stem}: {kind} (") for stem, kind in shown]
    assert captions == sorted(captions)
    for scene in scenes:
        alone = predict_scene(scene, bundle, tmp_path / f"alone_{scene.stem}", tile=64, polygons=True,
                              client=cluster_client)
        assert alone.summary["tiles_total"] == np.prod([-(-n // 64) for n in SHAPES[scene.stem]])
        _assert_same_outputs(tmp_path / "together", tmp_path / f"alone_{scene.stem}", scene.stem)


def _predict_command(scenes: list[Path], bundle: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "geoseg_batch.cli", "--quiet", "predict", *map(str, scenes), "--model", str(bundle),
            "--out", str(out), "--tile", "64", "--workers", "1", "--polygons"]


@pytest.mark.cluster
@pytest.mark.slow
def test_a_killed_many_scene_run_wrote_finished_scenes_products_and_resumes(tmp_path, cluster_client):
    bundle = make_bundle(tmp_path / "m.keras", base_filters=8)
    small = write_scene(tmp_path / "small.tif", (128, 128), seed=1)  # 4 tiles
    large = write_scene(tmp_path / "large.tif", (768, 768), seed=2)  # 144 tiles
    out = tmp_path / "killed"
    process = subprocess.Popen(_predict_command([small, large], bundle, out), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        stage = [*tmp_path.glob(".killed.staging-*")]
        if stage and len([*stage[0].glob(".done/large/*")]) >= 20 and (stage[0] / "small_polygons.gpkg").exists():
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the run finished before it could be killed; make the large scene larger"
    stage = next(tmp_path.glob(".killed.staging-*"))
    done_before = len([*stage.glob(".done/large/*")])
    assert 20 <= done_before < 144, "the large scene's tiles must have been running"
    # The small scene's products were written while the large scene's tiles ran, not after them all.
    assert (stage / "small_mask.tif").exists() and (stage / "small_polygons.gpkg").exists()

    rerun = subprocess.run(_predict_command([small, large], bundle, out), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["tiles_total"] == 148 and summary["tiles_resumed"] >= done_before + 4
    assert summary["tiles_computed"] + summary["tiles_skipped"] == 148 - summary["tiles_resumed"]
    clean = predict_scene([small, large], bundle, tmp_path / "clean", tile=64, polygons=True, client=cluster_client)
    assert clean.summary["tiles_resumed"] == 0
    for stem in ("small", "large"):
        _assert_same_outputs(out, tmp_path / "clean", stem)
