"""Mosaics: scene predictions onto one grid, chunk by chunk; geometry, merge rules, updates, bad input."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject, transform
from rasterio.windows import Window as RasterWindow

from geoseg_batch import predict_scene
from geoseg_batch.errors import ConfigError, DataError, MissingInputError
from geoseg_batch.geo.merge import edge_distance, merge_first, merge_layers, merge_max, merge_mean
from geoseg_batch.geo.mosaic import build_mosaic
from geoseg_batch.geo.sources import chunks_touched, mosaic_grid, store_grid
from geoseg_batch.geo.target_grid import MosaicGrid
from geoseg_batch.io.cog import write_cog
from tests.helpers import local_client, make_bundle, write_scene

# GDAL's MEM-to-MEM warps, run in threads, now and then warn that a dataset has no
# geotransform although the results are right (rasterio; odc-geo#131).
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

SCENE_SHAPE = (200, 180)
QUADRANTS = {"q00": (0, 101, 0, 91), "q01": (0, 101, 90, 180), "q10": (100, 200, 0, 91), "q11": (100, 200, 90, 180)}


@dataclass(frozen=True)
class Predictions:
    scene: Path  # the whole EPSG:32633 scene
    out: Path  # uint8 stores: whole, q00..q11 (its quadrants, one-pixel overlaps), geo (EPSG:4326)
    out_float: Path  # float32 stores: whole, geo


@pytest.fixture(scope="module")
def client():
    with local_client(1, processes=False) as c:
        yield c


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, client) -> Predictions:
    root = tmp_path_factory.mktemp("mosaic")
    bundle = make_bundle(root / "m.keras")
    scenes = root / "scenes"
    scenes.mkdir()
    whole = write_scene(scenes / "whole.tif", SCENE_SHAPE, seed=1)
    with rasterio.open(whole) as src:
        for name, (r0, r1, c0, c1) in QUADRANTS.items():
            window = RasterWindow(c0, r0, c1 - c0, r1 - r0)
            profile = {**src.profile, "height": r1 - r0, "width": c1 - c0, "transform": src.window_transform(window)}
            with rasterio.open(scenes / f"{name}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
                dst.descriptions = src.descriptions
    # A 4326 scene from the middle of the UTM one to beyond its south-east corner, coarser
    # (about 15 x 22 m), so the UTM scene's 10 m is the finest resolution.
    (lon,), (lat,) = transform("EPSG:32633", "EPSG:4326", [501000], [5199000])
    geo = write_scene(scenes / "geo.tif", (90, 110), crs="EPSG:4326", seed=2,
                      transform=from_origin(lon, lat, 0.0002, 0.0002))
    out, out_float = root / "out", root / "out_float"
    predict_scene([whole, *(scenes / f"{q}.tif" for q in QUADRANTS), geo], bundle, out, tile=64, cog=False,
                  client=client)
    predict_scene([whole, geo], bundle, out_float, tile=64, cog=False, float_output=True, client=client)
    return Predictions(whole, out, out_float)


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return group["probabilities"][:], group["mask"][:]


def _assert_georeferenced(path: Path, grid: MosaicGrid) -> None:
    dataset = xr.open_zarr(path)  # plain: spatial_ref must come back as a coordinate
    assert "spatial_ref" in dataset.coords
    assert dataset.rio.crs == CRS.from_user_input(grid.crs)
    assert dataset.rio.transform().almost_equals(grid.transform, precision=1e-9)
    assert dataset["mask"].shape == grid.shape


def test_quadrants_mosaic_back_onto_the_scene_grid(predictions, client, tmp_path):
    stores = [predictions.out / f"{q}.zarr" for q in QUADRANTS]
    grid = mosaic_grid(stores, chunk=64)
    with rasterio.open(predictions.scene) as src:
        assert CRS.from_user_input(grid.crs) == src.crs
        assert grid.transform == src.transform and grid.shape == (src.height, src.width)

    summary = build_mosaic(stores, tmp_path / "mosaic.zarr", grid, "first", client=client)
    assert summary.chunks_written == tuple(grid.chunk_indices()) and summary.chunks_total == 12

    # Expected: each quadrant pasted, later ones first, so the first (in order) covering a pixel wins.
    expected_p = np.full((1, *SCENE_SHAPE), 255, np.uint8)
    expected_m = np.full(SCENE_SHAPE, 255, np.uint8)
    overlap_differs = False
    for name, (r0, r1, c0, c1) in reversed(QUADRANTS.items()):
        probabilities, mask = _arrays(predictions.out / f"{name}.zarr")
        pasted = expected_p[:, r0:r1, c0:c1]
        overlap_differs |= bool((pasted != probabilities)[pasted != 255].any())
        expected_p[:, r0:r1, c0:c1], expected_m[r0:r1, c0:c1] = probabilities, mask
    assert overlap_differs, "quadrants agree on their overlap: the order would not be tested"
    probabilities, mask = _arrays(tmp_path / "mosaic.zarr")
    np.testing.assert_array_equal(mask, expected_m)
    np.testing.assert_array_equal(probabilities, expected_p)
    assert (mask != 255).all()

    _assert_georeferenced(tmp_path / "mosaic.zarr", grid)
    cog = write_cog(tmp_path / "mosaic.zarr", "mask", tmp_path / "mask.tif", tile=64)
    with rasterio.open(cog) as src, rasterio.open(f'ZARR:"{tmp_path / "mosaic.zarr"}":/mask') as gdal_zarr:
        for dataset in (src, gdal_zarr):  # the COG, and GDAL reading the zarr itself
            assert dataset.crs == CRS.from_user_input(grid.crs) and dataset.nodata == 255
            assert dataset.transform.almost_equals(grid.transform, precision=1e-9)
            np.testing.assert_array_equal(dataset.read(1), mask)


def _reference_layers(store: Path, grid: MosaicGrid, index: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A whole store warped (nearest) straight onto one chunk, by rasterio alone."""
    dataset = xr.open_zarr(store)
    probabilities, mask = _arrays(store)
    shape = grid.chunk_window(index).shape
    nodata = 255 if probabilities.dtype == np.uint8 else np.nan
    out_p = np.full((probabilities.shape[0], *shape), nodata, probabilities.dtype)
    out_m = np.full(shape, 255, np.uint8)
    for source, out, source_nodata in ((probabilities, out_p, nodata), (mask, out_m, 255)):
        reproject(source, out, src_transform=dataset.rio.transform(), src_crs=dataset.rio.crs, src_nodata=source_nodata,
                  dst_transform=grid.chunk_transform(index), dst_crs=grid.crs, dst_nodata=source_nodata,
                  resampling=Resampling.nearest)
    return out_p, out_m


def _reference_mosaic(store: Path, grid: MosaicGrid) -> tuple[np.ndarray, np.ndarray]:
    """A whole store warped onto ``grid`` chunk by chunk, by rasterio alone (no merge)."""
    parts = {index: _reference_layers(store, grid, index) for index in grid.chunk_indices()}
    probabilities = np.empty((parts[0, 0][0].shape[0], *grid.shape), parts[0, 0][0].dtype)
    mask = np.empty(grid.shape, np.uint8)
    for index, (part_p, part_m) in parts.items():
        rows, cols = grid.chunk_window(index).slices()
        probabilities[:, rows, cols], mask[rows, cols] = part_p, part_m
    return probabilities, mask


@pytest.mark.parametrize("encoding, zarr_format", [("uint8", 2), ("float32", 3)])
def test_two_crs_onto_a_given_grid(predictions, client, tmp_path, encoding, zarr_format):
    out = predictions.out if encoding == "uint8" else predictions.out_float
    stores = [out / "whole.zarr", out / "geo.zarr"]
    grid = mosaic_grid(stores, crs="EPSG:32633", resolution=15.0, bounds=(499700, 5197500, 502300, 5200300), chunk=64)
    assert grid.shape == (187, 174) and grid.transform == from_origin(499700, 5200300, 15, 15)

    build_mosaic(stores, tmp_path / "mosaic.zarr", grid, "max", zarr_format=zarr_format, client=client)

    _assert_georeferenced(tmp_path / "mosaic.zarr", grid)
    probabilities, mask = _arrays(tmp_path / "mosaic.zarr")
    assert probabilities.dtype == np.dtype(encoding)
    references = [_reference_mosaic(store, grid) for store in stores]
    expected_p, expected_m = merge_max(np.stack([p for p, _ in references]), np.stack([m for _, m in references]))
    np.testing.assert_array_equal(mask, expected_m)
    np.testing.assert_array_equal(probabilities, expected_p)
    # Both scenes show, and the grid's corners beyond them are nodata.
    assert all((m != 255).sum() > 1000 for _, m in references)
    assert mask[0, 0] == 255 and mask[-1, 0] == 255 and mask[0, -1] == 255
    assert probabilities[0, 0, 0] == 255 if encoding == "uint8" else np.isnan(probabilities[0, 0, 0])


def test_two_crs_onto_a_derived_grid(predictions, tmp_path):
    stores = [predictions.out / "whole.zarr", predictions.out / "geo.zarr"]
    grid = mosaic_grid(stores, chunk=64)
    # The first store's CRS, the finest resolution (the UTM scene's 10 m), on its pixel lattice,
    # covering both footprints.
    assert grid.crs == "EPSG:32633" and grid.resolution == (10.0, 10.0)
    assert grid.transform.c == 500000 and grid.transform.f == 5200000
    left, bottom, right, top = grid.bounds
    assert (right - left) / 10 == grid.shape[1] and right > 501800 and bottom < 5198000

    build_mosaic(stores, tmp_path / "mosaic.zarr", grid, "mean")  # Dask's threaded scheduler

    _assert_georeferenced(tmp_path / "mosaic.zarr", grid)
    probabilities, mask = _arrays(tmp_path / "mosaic.zarr")
    (whole_p, whole_m), (geo_p, geo_m) = (_reference_mosaic(store, grid) for store in stores)
    np.testing.assert_array_equal(whole_p[:, :200, :180], _arrays(stores[0])[0])  # on its own lattice: copied
    # Where one scene alone covers a pixel the mean is its value; where both do, it lies between.
    only_whole, only_geo, both = (whole_m != 255) & (geo_m == 255), (whole_m == 255) & (geo_m != 255), \
        (whole_m != 255) & (geo_m != 255)
    assert only_whole.any() and only_geo.any() and both.sum() > 1000
    np.testing.assert_array_equal(probabilities[0][only_whole], whole_p[0][only_whole])
    np.testing.assert_array_equal(probabilities[0][only_geo], geo_p[0][only_geo])
    low, high = np.minimum(whole_p[0], geo_p[0]), np.maximum(whole_p[0], geo_p[0])
    assert ((probabilities[0] >= low) & (probabilities[0] <= high))[both].all()
    assert (probabilities[0] != whole_p[0])[both].any()
    # The mask follows the mean, and nothing covers the south-west corner.
    valid = mask != 255
    np.testing.assert_array_equal(valid, (whole_m != 255) | (geo_m != 255))
    # (From the unrounded mean, as predict does: stored 125 = 0.5 may come from just below 0.5.)
    decided = valid & (probabilities[0] != 125)
    np.testing.assert_array_equal(mask[decided], (probabilities[0][decided] > 125).astype(np.uint8))
    assert not valid[-1, 0] and probabilities[0, -1, 0] == 255


def test_merge_rules_pure():
    nodata = 255
    # Three binary layers (uint8, one band) over four pixels, layer 0 missing on pixel 0,
    # none covering pixel 3.
    p = np.array([[[[255, 100, 125, 255]]], [[[200, 240, 125, 255]]], [[[30, 10, 60, 255]]]], np.uint8)
    m = np.array([[[255, 0, 1, 255]], [[1, 1, 1, 255]], [[0, 0, 0, 255]]], np.uint8)
    first_p, first_m = merge_first(p, m)
    np.testing.assert_array_equal(first_p, [[[200, 100, 125, nodata]]])
    np.testing.assert_array_equal(first_m, [[1, 0, 1, nodata]])
    # max: confidence max(v, 250 - v): pixel 1 ties 240 vs 10 (both 240): the first wins.
    max_p, max_m = merge_max(p, m)
    np.testing.assert_array_equal(max_p, [[[30, 240, 60, nodata]]])
    np.testing.assert_array_equal(max_m, [[0, 1, 0, nodata]])
    # mean: weighted, mask recomputed (p >= 0.5).
    w = np.array([[[1, 1, 3, 1]], [[1, 3, 1, 1]], [[2, 1, 1, 1]]], np.float32)
    mean_p, mean_m = merge_mean(p, m, w, threshold=0.5)
    np.testing.assert_array_equal(mean_p, [[[round((200 + 60) / 3), round((100 + 720 + 10) / 5),
                                             round((375 + 125 + 60) / 5), nodata]]])
    np.testing.assert_array_equal(mean_m, [[0, 1, 0, nodata]])
    # Float32 multi-class (3 classes): NaN nodata, max over classes, argmax of the mean.
    f = np.array([[[[0.2]], [[0.7]], [[0.1]]], [[[0.5]], [[0.1]], [[0.4]]], [[[np.nan]], [[np.nan]], [[np.nan]]]],
                 np.float32)
    fm = np.array([[[1]], [[0]], [[255]]], np.uint8)
    np.testing.assert_array_equal(merge_max(f, fm)[1], [[1]])
    np.testing.assert_array_equal(merge_first(f[::-1], fm[::-1])[1], [[0]])
    mean_f, mean_fm = merge_mean(f, fm, np.array([[[1]], [[3]], [[5]]], np.float32), threshold=None)
    np.testing.assert_allclose(mean_f[:, 0, 0], [(0.2 + 1.5) / 4, (0.7 + 0.3) / 4, (0.1 + 1.2) / 4], rtol=1e-6)
    np.testing.assert_array_equal(mean_fm, [[0]])
    none_p, none_m = merge_layers("mean", f[2:], fm[2:], np.ones((1, 1, 1), np.float32))
    assert np.isnan(none_p).all() and (none_m == nodata).all()
    # Feathering: weights grow by one per pixel away from the scene's edge.
    np.testing.assert_array_equal(edge_distance(*np.mgrid[0:4, 0:5], (4, 5)),
                                  [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ConfigError, match="one of max, first, mean"):
        merge_layers("median", p, m, w)


def test_incremental_update_writes_only_the_touched_chunks(predictions, client, tmp_path):
    whole, geo = predictions.out / "whole.zarr", predictions.out / "geo.zarr"
    grid = mosaic_grid([whole, geo], chunk=64)
    full = build_mosaic([whole, geo], tmp_path / "full.zarr", grid, "max", client=client)
    # The south-west corner of the union is in neither scene: its chunks are not computed.
    assert full.chunks_written == tuple(chunks_touched(grid, [whole, geo]))
    assert len(full.chunks_written) < full.chunks_total

    # Yesterday's mosaic had the UTM scene only; today the 4326 scene arrives.
    update = tmp_path / "update.zarr"
    build_mosaic([whole], update, grid, "max", client=client)
    touched = chunks_touched(grid, [geo])
    assert 0 < len(touched) < full.chunks_total
    before = {p: p.stat().st_mtime_ns for p in update.rglob("*") if p.is_file() and not p.name.startswith(".z")}
    summary = build_mosaic([whole, geo], update, grid, "max", chunks=touched, client=client)

    assert summary.chunks_written == tuple(touched) and summary.as_summary()["tiles_computed"] == len(touched)
    for path, mtime in before.items():
        index = tuple(int(n) for n in path.name.split(".")[-2:])
        if index not in touched:
            assert path.stat().st_mtime_ns == mtime, f"{path} rewritten but not among the chunks asked for"
    for got, want in zip(_arrays(update), _arrays(tmp_path / "full.zarr")):
        np.testing.assert_array_equal(got, want)


def test_bad_inputs_fail_with_clear_errors(predictions, tmp_path):
    whole, geo = predictions.out / "whole.zarr", predictions.out / "geo.zarr"
    other = tmp_path / "other.zarr"
    shutil.copytree(whole, other)
    group = zarr.open_group(str(other), mode="r+")
    group["mask"].attrs["classes"] = ["background", "flood"]
    zarr.consolidate_metadata(str(other))
    with pytest.raises(DataError, match=r"classes \('background', 'flood'\), expected \('background', 'landslide'\)"):
        mosaic_grid([whole, other])
    with pytest.raises(DataError, match="probability_dtype 'float32', expected 'uint8'"):
        mosaic_grid([whole, predictions.out_float / "geo.zarr"])

    grid = mosaic_grid([whole], chunk=64)
    build_mosaic([whole], tmp_path / "mosaic.zarr", grid, "first")
    coarser = MosaicGrid(grid.crs, Affine(20, 0, grid.transform.c, 0, -20, grid.transform.f), (100, 90), 64)
    with pytest.raises(DataError, match=r"another grid \(transform .* shape \(200, 180\) instead of \(100, 90\)"):
        build_mosaic([whole, geo], tmp_path / "mosaic.zarr", coarser, "first")
    assert store_grid(tmp_path / "mosaic.zarr") == grid  # ... and the store is left as it was

    with pytest.raises(MissingInputError, match="prediction store not found"):
        mosaic_grid([tmp_path / "missing.zarr"])
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(DataError, match="expected a <stem>.zarr store"):
        mosaic_grid([tmp_path / "empty.zarr"])
    with pytest.raises(ConfigError, match="merge rule 'median' unknown"):
        build_mosaic([whole], tmp_path / "m2.zarr", grid, "median")
    with pytest.raises(ConfigError, match=r"chunks \[\(9, 9\)\] are outside"):
        build_mosaic([whole], tmp_path / "m2.zarr", grid, chunks=[(9, 9)])
    assert not os.path.exists(tmp_path / "m2.zarr")


def test_an_incremental_mosaic_rebuilds_when_its_merge_rule_changes_and_adds_cogs_it_lacked(predictions, client,
                                                                                             tmp_path):
    from geoseg_batch import mosaic

    out, clean = tmp_path / "mosaic", tmp_path / "clean"
    first = mosaic([predictions.out], out, chunk=64, merge="max", cog=False, incremental=True, client=client)
    assert first.summary["chunks_written"] > 0
    again = mosaic([predictions.out], out, chunk=64, merge="max", incremental=True, client=client)
    assert again.summary["chunks_written"] == 0  # nothing changed but the COGs asked for: written, not reused
    assert (out / "mosaic_mask.tif").exists() and (out / "mosaic_probabilities.tif").exists()
    changed = mosaic([predictions.out], out, chunk=64, merge="first", incremental=True, client=client)
    assert changed.summary["chunks_written"] == first.summary["chunks_written"]  # another rule: every chunk again
    mosaic([predictions.out], clean, chunk=64, merge="first", client=client)
    for got, want in zip(_arrays(out / "mosaic.zarr"), _arrays(clean / "mosaic.zarr")):
        np.testing.assert_array_equal(got, want)
