"""Resume after a killed client, and incremental runs that redo only what changed."""

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
import rasterio
import xarray as xr

from geoseg_batch import predict_scene
from tests.helpers import local_client
from tests.helpers import make_bundle, write_scene


def _predict_command(scene: Path, bundle: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "geoseg_batch.cli", "--quiet", "predict", str(scene), "--model", str(bundle),
            "--out", str(out), "--tile", "64", "--workers", "1"]


def _assert_same_outputs(a: Path, b: Path, stem: str) -> None:
    with xr.open_zarr(a / f"{stem}.zarr") as first, xr.open_zarr(b / f"{stem}.zarr") as second:
        for variable in ("probabilities", "mask"):
            np.testing.assert_array_equal(first[variable].values, second[variable].values)
    for name in (f"{stem}_mask.tif", f"{stem}_probabilities.tif"):
        with rasterio.open(a / name) as first, rasterio.open(b / name) as second:
            np.testing.assert_array_equal(first.read(), second.read())


@pytest.mark.cluster
@pytest.mark.slow
def test_killed_client_rerun_computes_fewer_tiles_and_gives_identical_output(tmp_path):
    bundle = make_bundle(tmp_path / "m.keras", base_filters=8)
    scene = write_scene(tmp_path / "scene.tif", (768, 768))
    out = tmp_path / "killed"
    # The client process and its embedded cluster die together, as when a terminal is closed.
    process = subprocess.Popen(_predict_command(scene, bundle, out), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(tmp_path.glob(".killed.staging-*/.done/scene/*"))) >= 20:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the run finished before it could be killed; make the scene larger"
    done_before = len(list(tmp_path.glob(".killed.staging-*/.done/scene/*")))
    assert 20 <= done_before < 144

    rerun = subprocess.run(_predict_command(scene, bundle, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["tiles_total"] == 144
    assert summary["tiles_resumed"] >= done_before
    assert summary["tiles_computed"] + summary["tiles_skipped"] == 144 - summary["tiles_resumed"] < 144
    assert not list(out.glob(".*")), "completion records must not be published"

    clean = subprocess.run(_predict_command(scene, bundle, tmp_path / "clean"), capture_output=True, text=True,
                           timeout=300)
    assert clean.returncode == 0, clean.stderr
    _assert_same_outputs(out, tmp_path / "clean", "scene")


@pytest.fixture(scope="module")
def cluster_client():
    with local_client(1, processes=False) as client:
        yield client


@pytest.mark.cluster
def test_incremental_predict_predicts_only_new_or_changed_scenes(tmp_path, cluster_client):
    bundle = make_bundle(tmp_path / "m.keras")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for n in (1, 2):
        write_scene(incoming / f"scene_{n}.tif", (100, 90), seed=n)
    out = tmp_path / "predictions"

    def run():
        return predict_scene([str(incoming / "*.tif")], bundle, out, tile=64, incremental=True, client=cluster_client)

    first = run()
    assert (first.summary["scenes_predicted"], first.summary["scenes_reused"]) == (2, 0)
    assert out.is_symlink()
    first_version = out.resolve()

    write_scene(incoming / "scene_3.tif", (100, 90), seed=3)
    second = run()
    assert (second.summary["scenes_predicted"], second.summary["scenes_reused"]) == (1, 2)
    assert second.summary["tiles_computed"] == 4  # only scene_3's tiles
    assert [Path(o["scene"]).name for o in second.outputs] == ["scene_1.tif", "scene_2.tif", "scene_3.tif"]
    assert first_version.exists() and out.resolve() != first_version  # readers of the old version are undisturbed
    _assert_same_outputs(first_version, out, "scene_1")
    assert os.stat(first_version / "scene_1_mask.tif").st_ino == os.stat(out / "scene_1_mask.tif").st_ino

    write_scene(incoming / "scene_2.tif", (100, 90), seed=20)  # changed content
    third = run()
    assert (third.summary["scenes_predicted"], third.summary["scenes_reused"]) == (1, 2)

    nothing_new = run()
    assert nothing_new.summary["scenes_predicted"] == 0 and nothing_new.summary["tiles_computed"] == 0
    assert "phases" not in nothing_new.summary  # no cluster work, no model


def test_scene_patterns_and_lists(tmp_path):
    from geoseg_batch.errors import MissingInputError
    from geoseg_batch.geo.scene import scene_paths

    for name in ("b.tif", "a.tif"):
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "scenes.txt"
    listing.write_text("# tonight\na.tif\n\n" + str(tmp_path / "c.tif") + "\n")
    assert scene_paths([tmp_path / "*.tif"], listing) == [tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"]
    with pytest.raises(MissingInputError, match="matches no files"):
        scene_paths([tmp_path / "*.jp2"])
    with pytest.raises(MissingInputError, match="scene_list"):
        scene_paths([], tmp_path / "missing.txt")
