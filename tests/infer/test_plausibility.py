"""Scene plausibility at run start: sampled band statistics against the bundle's normalization; all-nodata scenes.

Scenes are built in tmp_path from the real Landsat clip (../shared/data), against a bundle whose
normalization is the clip's own (uint8) statistics.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import rasterio

from geoseg_batch import predict_scene
from geoseg_batch.errors import DataError
from geoseg_batch.geo.plausibility import MEDIAN_Z_LIMIT, sample_plausibility, scene_checks
from geoseg_batch.geo.scene import open_scene
from geoseg_batch.model.bundle import load_bundle, read_metadata, save_bundle
from tests.helpers import SHARED_DATA, make_bundle

LANDSAT = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not LANDSAT.exists(), reason="needs ../shared/data (landsat_rgb/RGB.byte.tif)")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A 3-band bundle whose normalization is the clip's own statistics (valid pixels)."""
    root = tmp_path_factory.mktemp("bundle")
    with rasterio.open(LANDSAT) as src:
        data = src.read()
        valid = np.all(data != src.nodata, axis=0)
    pixels = data[:, valid].astype(np.float64)
    loaded = load_bundle(make_bundle(root / "raw.keras", bands=3))
    normalization = {"mean": pixels.mean(1).tolist(), "std": pixels.std(1).tolist(),
                     "min": pixels.min(1).tolist(), "max": pixels.max(1).tolist()}
    return save_bundle(loaded.model, dataclasses.replace(loaded.metadata, normalization=normalization),
                       root / "m.keras")


def _derived(path, transform_data, dtype: str, overviews: bool = False):
    """The clip with its pixels through ``transform_data`` (collar kept at nodata 0), as ``dtype``."""
    with rasterio.open(LANDSAT) as src:
        data, profile = src.read(), src.profile
    profile.update(dtype=dtype, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(transform_data(data).astype(dtype))
    if overviews:
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews([2, 4, 8])
    return path


def _check(scene, bundle):
    return sample_plausibility(open_scene(scene, read_metadata(bundle)), read_metadata(bundle))


def test_the_scene_the_normalization_fits_is_plausible(bundle):
    checked = _check(LANDSAT, bundle)
    assert checked.status == "ok" and checked.sampled > 1000 and checked.source == "windows"
    assert max(checked.median_abs_z) < 2 and checked.message() is None


@pytest.mark.parametrize("overviews", [False, True], ids=["sparse-windows", "overviews"])
def test_uint16_values_x100_warn_and_are_recorded(tmp_path, bundle, overviews, caplog):
    scene = _derived(tmp_path / "x100.tif", lambda d: d.astype(np.uint16) * 100, "uint16", overviews)
    checked = _check(scene, bundle)
    assert checked.status == "out_of_range" and checked.source == ("overview" if overviews else "windows")
    assert min(checked.median_abs_z) > MEDIAN_Z_LIMIT
    with caplog.at_level(logging.WARNING):
        records = scene_checks({"x100": open_scene(scene, read_metadata(bundle))}, read_metadata(bundle))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    line = warnings[0]
    for fact in (str(scene), "band b", "sampled median", "mean", "std", "uint16", "--strict"):
        assert fact in line, (fact, line)
    assert records["x100"]["status"] == "out_of_range" and len(records["x100"]["flagged_bands"]) == 3


def test_out_of_range_is_recorded_in_the_manifest_and_strict_refuses(tmp_path, bundle, client, capsys, monkeypatch):
    from geoseg_batch.cli import main

    # main() logs through a handler on the stderr of its first call: give it this test's (captured) one
    monkeypatch.setattr(logging.getLogger("geoseg_batch"), "handlers", [])
    scene = _derived(tmp_path / "x100.tif", lambda d: d.astype(np.uint16) * 100, "uint16")
    result = predict_scene(scene, bundle, tmp_path / "out", tile=256, cog=False, client=client)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["summary"]["plausibility"]["x100"]["status"] == "out_of_range"
    assert result.summary["plausibility"] == manifest["summary"]["plausibility"]
    with pytest.raises(DataError, match="refused by --strict"):
        predict_scene(scene, bundle, tmp_path / "strict", tile=256, strict=True, client=client)
    assert not (tmp_path / "strict").exists()
    code = main(["predict", str(scene), "--model", str(bundle), "--out", str(tmp_path / "cli"), "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "refused by --strict" in err[-1] and "x100.tif" in err[-1]
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "cli").exists()


def test_all_nodata_scene_is_reported_and_strict_refuses(tmp_path, bundle, client):
    scene = _derived(tmp_path / "empty.tif", np.zeros_like, "uint8")
    checked = _check(scene, bundle)
    assert checked.status == "all_nodata" and checked.sampled == 0 and checked.source == "scan"
    assert "every pixel is nodata" in checked.message()
    result = predict_scene(scene, bundle, tmp_path / "out", tile=256, cog=False, client=client)
    assert result.summary["plausibility"]["empty"]["status"] == "all_nodata"
    assert result.summary["tiles_computed"] == 0
    with pytest.raises(DataError, match="every pixel is nodata.*refused by --strict"):
        predict_scene(scene, bundle, tmp_path / "strict", tile=256, strict=True, client=client)
    assert not (tmp_path / "strict").exists()


def test_a_small_valid_area_the_sparse_sample_misses_is_not_all_nodata(tmp_path, bundle):
    def corner_only(data):
        kept = np.zeros_like(data)
        kept[:, 300:310, 400:410] = data[:, 300:310, 400:410]
        return kept

    with rasterio.open(LANDSAT) as src:
        assert np.all(src.read(window=((300, 310), (400, 410))) != 0)  # the patch is inside the footprint
    checked = _check(_derived(tmp_path / "patch.tif", corner_only, "uint8"), bundle)
    assert checked.source == "scan" and checked.sampled == 100 and checked.status == "ok"


def test_strict_is_a_predict_flag_and_no_part_of_the_content_key():
    from geoseg_batch.config import PredictJob
    from geoseg_batch.options import job_options
    from geoseg_batch.runs.settings import job_settings

    option = next(o for o in job_options(PredictJob) if o.name == "strict")
    assert option.flag == "--strict" and option.default is False and "training statistics" in option.help
    job = PredictJob(scenes=["a.tif"], model="m.keras", out="o")
    assert job_settings(job) == job_settings(job.model_copy(update={"strict": True}))
