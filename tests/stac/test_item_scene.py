"""An Item's bands matched to the bundle's and stacked by a VRT (stac/item_scene.py, geo/vrt.py): pure matching
rules, the one-line errors, and the VRT against gdalbuildvrt on real data split into bands at two resolutions."""

from __future__ import annotations

import shutil
import subprocess
import numpy as np
import pytest

from geoseg_batch.errors import CatalogError
from geoseg_batch.geo.vrt import StackedBand, file_grid, stack_vrt
from geoseg_batch.stac.item_scene import asset_bands, band_sources, scene_stem
from tests.helpers import SHARED_DATA

RGB = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"


def _item(**assets):
    return {"type": "Feature", "id": "S2A_T1", "assets": assets, "properties": {}}


def _eo(*bands):
    return {"href": "s3://b/k.tif", "eo:bands": [{"name": n, "common_name": c} for n, c in bands]}


def test_multi_band_asset_matched_by_name_then_common_name():
    item = _item(visual=_eo(("B04", "red"), ("B03", "green"), ("B02", "blue"), ("B08", "nir")))
    by_name = band_sources(item, ("B02", "B08"), {})
    assert [(s.asset, s.band) for s in by_name] == [("visual", 3), ("visual", 4)]
    by_common = band_sources(item, ("nir", "red"), {})
    assert [(s.name, s.asset, s.band) for s in by_common] == [("nir", "visual", 4), ("red", "visual", 1)]


def test_one_asset_per_band_and_stac_1_1_bands_and_raster_facts():
    item = _item(B04={"href": "s3://b/B04.tif", "bands": [{"name": "B04", "eo:common_name": "red", "nodata": 0,
                                                         "raster:scale": 0.0001, "raster:offset": -0.1}]},
                 B8A={"href": "s3://b/B8A.tif", "eo:bands": [{"name": "B8A", "common_name": "nir08"}],
                      "raster:bands": [{"nodata": 0, "scale": 0.0001}]},
                 SCL={"href": "s3://b/SCL.tif"})
    red, nir, scl = band_sources(item, ("red", "nir08", "SCL"), {})
    assert (red.asset, red.nodata, red.scale, red.offset) == ("B04", 0.0, 0.0001, -0.1)
    assert (nir.asset, nir.nodata, nir.scale, nir.offset) == ("B8A", 0.0, 0.0001, None)
    assert (scl.asset, scl.band) == ("SCL", 1)  # matched by the asset's key
    assert asset_bands({"href": "x"}) == []


def test_explicit_mapping_wins_and_is_checked():
    item = _item(a={"href": "s3://b/a.tif"}, b={"href": "s3://b/b.tif"})
    sources = band_sources(item, ("x", "y"), {"x": "b", "y": "a"})
    assert [s.href for s in sources] == ["s3://b/b.tif", "s3://b/a.tif"]
    with pytest.raises(CatalogError, match=r"maps x to asset 'c', which Item 'S2A_T1' does not have \(assets: a, b\)"):
        band_sources(item, ("x", "y"), {"x": "c", "y": "a"})
    with pytest.raises(CatalogError, match=r"maps \['z'\], which are not bands of the model \(x, y\)"):
        band_sources(item, ("x", "y"), {"z": "a"})


def test_a_missing_band_names_what_was_found_and_the_mapping_that_fixes_it():
    item = _item(visual=_eo(("B04", "red"), ("B03", "green")), extra={"href": "s3://b/e.tif"})
    with pytest.raises(CatalogError) as exc:
        band_sources(item, ("red", "green", "nir"), {})
    line = str(exc.value)
    assert "\n" not in line
    assert "Item 'S2A_T1' has no band named nir" in line
    assert "visual:B04, visual:B03, extra" in line and "--assets nir=ASSET" in line and "assets: {nir: ASSET}" in line


def test_stems_are_file_names():
    assert scene_stem("S2B_MSIL2A/20240501 T32") == "S2B_MSIL2A_20240501_T32"


@pytest.mark.realdata
@pytest.mark.skipif(not RGB.exists() or shutil.which("gdalbuildvrt") is None, reason="needs ../shared/data and gdal-bin")
def test_vrt_of_bands_at_two_resolutions_reads_as_gdalbuildvrts(tmp_path):
    import rasterio

    names = []
    for band in (1, 2, 3):
        out = tmp_path / f"b{band}.tif"
        size = ["-outsize", "50%", "50%", "-r", "average"] if band == 3 else []
        subprocess.run(["gdal_translate", "-q", "-b", str(band), *size, "-of", "COG", str(RGB), str(out)], check=True)
        names.append(str(out))
    subprocess.run(["gdalbuildvrt", "-q", "-separate", "-resolution", "highest", str(tmp_path / "ref.vrt"), *names],
                   check=True)
    bands = [StackedBand(f"band{n}", name, 1, file_grid(name)) for n, name in enumerate(names, 1)]
    assert bands[2].grid.width < bands[0].grid.width  # the third band is on the coarser grid
    with rasterio.open(stack_vrt(bands)) as ours, rasterio.open(tmp_path / "ref.vrt") as ref:
        assert (ours.shape, ours.transform, ours.crs, ours.nodatavals) == (ref.shape, ref.transform, ref.crs,
                                                                            ref.nodatavals)
        assert ours.descriptions == ("band1", "band2", "band3")
        assert np.array_equal(ours.read(), ref.read())
        window = rasterio.windows.Window(101, 57, 300, 211)
        assert np.array_equal(ours.read(window=window), ref.read(window=window))
