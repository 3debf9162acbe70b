"""Bad predict input: one line, exit 2, nothing at the output path."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geoseg_batch.cli import main

from tests.helpers import make_bundle, write_scene


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "m.keras")


def _predict(capsys, *args: str) -> tuple[int, str]:
    code = main(["predict", *args, "--workers", "1"])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def _assert_clean(code, line, out, *needles):
    assert code == 2, line
    assert line.startswith("geoseg-batch: error: ")
    for needle in needles:
        assert needle in line, line
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_scene_without_crs(tmp_path, capsys, bundle):
    scene = tmp_path / "nocrs.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):  # no geotransform, on purpose
        with rasterio.open(scene, "w", driver="GTiff", height=32, width=32, count=3, dtype="uint8") as dst:
            dst.write(np.zeros((3, 32, 32), np.uint8))
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):  # rasterio says so when predict opens it
        code, line = _predict(capsys, str(scene), "--model", str(bundle), "--out", str(tmp_path / "out"))
    _assert_clean(code, line, tmp_path / "out", "nocrs.tif", "no CRS", "gdal_edit.py")


def test_band_count_mismatch(tmp_path, capsys, bundle):
    scene = write_scene(tmp_path / "four.tif", (64, 64), bands=4, named=False)
    scene_named = write_scene(tmp_path / "named.tif", (64, 64), bands=3)
    code, line = _predict(capsys, str(scene), "--model", str(bundle), "--out", str(tmp_path / "out"))
    _assert_clean(code, line, tmp_path / "out", "four.tif", "4 bands", "expects 3", "--bands")
    code, line = _predict(capsys, str(scene_named), "--model", str(bundle), "--out", str(tmp_path / "out"),
                          "--bands", "b1,b2,nir")
    _assert_clean(code, line, tmp_path / "out", "no band named 'nir'")
    named_four = write_scene(tmp_path / "named_four.tif", (64, 64), bands=4)  # b1..b4: the model's b1..b3 by name
    assert main(["predict", str(named_four), "--model", str(bundle), "--out", str(tmp_path / "ok"), "--workers", "1",
                 "--tile", "64", "--no-cog"]) == 0


def test_unreadable_and_truncated_scene(tmp_path, capsys, bundle):
    junk = tmp_path / "junk.tif"
    junk.write_text("not a tiff")
    code, line = _predict(capsys, str(junk), "--model", str(bundle), "--out", str(tmp_path / "out"))
    _assert_clean(code, line, tmp_path / "out", "junk.tif", "not a readable raster")
    good = write_scene(tmp_path / "good.tif", (300, 300))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    code, line = _predict(capsys, str(truncated), "--model", str(bundle), "--out", str(tmp_path / "out"))
    assert code == 2 and "truncated.tif" in line, line
    assert not (tmp_path / "out").exists()


def test_tile_not_multiple_of_size_multiple(tmp_path, capsys, bundle):
    scene = write_scene(tmp_path / "s.tif", (64, 64))
    code, line = _predict(capsys, str(scene), "--model", str(bundle), "--out", str(tmp_path / "out"), "--tile", "100")
    _assert_clean(code, line, tmp_path / "out", "tile size 100", "multiple", "--tile 104")


def test_output_exists_without_overwrite(tmp_path, capsys, bundle):
    scene = write_scene(tmp_path / "s.tif", (64, 64))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    code = main(["predict", str(scene), "--model", str(bundle), "--out", str(out), "--workers", "1"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err.strip().splitlines()[-1]
    assert (out / "keep").read_text() == "x"


def test_not_a_bundle(tmp_path, capsys):
    scene = write_scene(tmp_path / "s.tif", (64, 64))
    fake = tmp_path / "model.keras"
    fake.write_text("nope")
    code, line = _predict(capsys, str(scene), "--model", str(fake), "--out", str(tmp_path / "out"))
    _assert_clean(code, line, tmp_path / "out", "model.keras", "not a model bundle")
