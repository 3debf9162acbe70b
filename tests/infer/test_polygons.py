"""predict --polygons: regions joined across chunk borders equal a whole-mask polygonization."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geoseg_batch import predict_scene

from tests.helpers import make_bundle, write_scene


def _whole_mask_regions(store: str):
    """(labels, {label: polygon}, probabilities) of the whole mask at once: the reference."""
    import rasterio.features
    import rioxarray  # noqa: F401
    from scipy import ndimage
    from shapely.geometry import shape

    dataset = xr.open_zarr(store)
    mask = dataset["mask"].values
    labels, _ = ndimage.label(mask == 1, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    polygons = {int(label): shape(geometry) for geometry, label in rasterio.features.shapes(
        labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=dataset.rio.transform())}
    return labels, polygons, dataset["probabilities"].values[0], dataset.rio.transform()


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326"])
def test_polygons_equal_a_whole_mask_polygonization(tmp_path, client, crs):
    import geopandas as gpd
    from rasterio.transform import rowcol

    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (200, 180), crs=crs, seed=3)
    result = predict_scene(scene, bundle, tmp_path / "out", tile=64, float_output=True, polygons=True, client=client)
    output = result.outputs[0]
    table = gpd.read_file(output["polygons"])
    labels, reference, probabilities, transform = _whole_mask_regions(output["zarr"])

    assert 5 < len(reference) == len(table), "the scene should have several regions"
    assert table.crs.to_epsg() == int(crs.split(":")[1])
    assert set(table.geom_type) == {"Polygon"} and set(table["class"]) == {"landslide"}
    crossing = 0
    for feature in table.itertuples():
        point = feature.geometry.representative_point()
        label = int(labels[rowcol(transform, point.x, point.y)])
        assert label > 0
        assert feature.geometry.symmetric_difference(reference[label]).area <= 1e-9 * reference[label].area
        region = labels == label
        assert feature.pixels == int(region.sum())
        assert feature.mean_probability == pytest.approx(float(probabilities[region].mean()), rel=1e-5)
        rows, cols = np.nonzero(region)
        crossing += (rows.min() // 64 != rows.max() // 64) or (cols.min() // 64 != cols.max() // 64)
    assert crossing >= 2, "some regions must cross chunk borders, or the join is untested"
    pixel_m2 = abs(transform.a * transform.e)
    if crs == "EPSG:4326":  # geodesic: 0.0001 deg is ~7.6 m east-west and ~11.1 m north-south at 47 N
        pixel_m2 = 0.0001 * 111_320 * np.cos(np.radians(46.99)) * 0.0001 * 111_150
    assert np.allclose(table["area_m2"], table["pixels"] * pixel_m2, rtol=0.01)


def test_polygons_of_a_mask_without_regions_is_an_empty_layer(tmp_path):
    import geopandas as gpd

    from geoseg_batch.geo.polygons import region_table, write_polygons

    table = region_table([], ("background", "landslide"), "EPSG:32633", __import__("affine").Affine.identity())
    path = write_polygons(table, tmp_path / "none.gpkg", "scene")
    read = gpd.read_file(path)
    assert len(read) == 0 and {"class", "pixels", "area_m2", "mean_probability"} <= set(read.columns)
