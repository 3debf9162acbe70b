"""Polygons of a class mask: one feature per connected region, with its area and mean probability.

A *region* is a maximal 4-connected set of pixels of one non-background class (nodata and
class 0 are not regions): the same connectivity GDAL's polygonize uses, so a region is one
polygon, with holes where it surrounds other pixels. The mask is polygonized chunk by chunk
of the zarr store (one Dask task per chunk, never the whole mask in memory): each chunk
labels its regions, turns each label into a polygon in the store's CRS, and sums its pixels
and probabilities. Regions that continue across a chunk border are then joined: two chunk
labels belong to one region when a pixel of each, side by side across the border, has the
same class (a union-find over the chunks' edge rows and columns); their polygons are
dissolved and their sums added.

Attributes per feature: ``class`` (name), ``pixels``, ``area_m2`` (planar for projected
CRSs, geodesic on the CRS's ellipsoid for geographic ones) and ``mean_probability`` (of the
feature's class, 0..1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.geo.grid import Window, block_windows
from geoseg_batch.io.storage import storage_for
from geoseg_batch.io.urls import output_location
from geoseg_batch.io.zarr_store import zarr_storage_options

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

# 4-connectivity (GDAL's polygonize default), as scipy.ndimage.label's structure.
_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


@dataclass(frozen=True)
class ChunkRegions:
    """What one chunk task returns: its regions and the labels on its four edges."""

    index: tuple[int, int]  # (chunk row, chunk col)
    classes: np.ndarray  # class id per label (label n at position n - 1)
    pixels: np.ndarray  # pixel count per label
    probability_sums: np.ndarray  # sum of the class's probability (0..1) per label
    shapes: list[tuple[dict[str, Any], int]]  # (GeoJSON-like polygon in scene pixel coordinates, label)
    top: np.ndarray  # labels of the first row, last row, first column, last column (0: no region)
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray


def chunk_regions(store: str, window: Window, index: tuple[int, int], mask_nodata: int,
                  probability_scale: float | None, cloud: CloudSettings | None = None) -> ChunkRegions:
    """Label, polygonize and sum the regions of ``window`` of the store's mask (``probability_scale``:
    what uint8 probabilities are divided by; None for float ones; ``cloud``: for a store in object storage)."""
    import rasterio.features
    import zarr
    from affine import Affine
    from scipy import ndimage

    group = zarr.open_group(store, mode="r", storage_options=zarr_storage_options(store, cloud))
    rows, cols = window.slices()
    mask = np.asarray(group["mask"][rows, cols])
    probabilities = np.asarray(group["probabilities"][:, rows, cols], np.float32)
    if probability_scale is not None:
        probabilities /= probability_scale
    labels = np.zeros(mask.shape, np.int32)
    classes: list[int] = []
    for class_id in np.unique(mask):
        if class_id == 0 or class_id == mask_nodata:
            continue
        class_labels, count = ndimage.label(mask == class_id, structure=_FOUR_CONNECTED)
        labels[class_labels > 0] = class_labels[class_labels > 0] + len(classes)
        classes.extend([int(class_id)] * count)
    # binary stores keep one probability band (the positive class); multi-class ones one per class
    band = np.clip(mask.astype(np.int64) - (1 if probabilities.shape[0] == 1 else 0), 0, probabilities.shape[0] - 1)
    class_probability = np.take_along_axis(probabilities, band[None], axis=0)[0]
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=len(classes) + 1)[1:]
    sums = np.bincount(flat, weights=class_probability.ravel(), minlength=len(classes) + 1)[1:]
    # In whole-scene pixel coordinates: integers, so pieces of a region meet exactly at chunk borders.
    shapes = [(geometry, int(label)) for geometry, label in rasterio.features.shapes(
        labels, mask=labels > 0, connectivity=4, transform=Affine.translation(window.col0, window.row0))]
    return ChunkRegions(index, np.asarray(classes, np.int64), pixels, sums, shapes,
                        labels[0].copy(), labels[-1].copy(), labels[:, 0].copy(), labels[:, -1].copy())


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[int, int, int], tuple[int, int, int]] = {}

    def find(self, node: tuple[int, int, int]) -> tuple[int, int, int]:
        """The root of ``node``'s set (paths compressed on the way)."""
        root = self.parent.setdefault(node, node)
        while root != self.parent[root]:
            root = self.parent[root]
        while node != root:  # path compression
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
        """Join the sets of ``a`` and ``b``."""
        self.parent[self.find(a)] = self.find(b)


def _join_borders(chunks: dict[tuple[int, int], ChunkRegions], regions: _UnionFind) -> None:
    """Union the labels of regions that touch across chunk borders (same class, side by side)."""
    for (row, col), chunk in chunks.items():
        for neighbour_index, mine, theirs in (((row, col + 1), chunk.right, "left"),
                                              ((row + 1, col), chunk.bottom, "top")):
            neighbour = chunks.get(neighbour_index)
            if neighbour is None:
                continue
            other = getattr(neighbour, theirs)
            touching = (mine > 0) & (other > 0)
            for a, b in set(zip(mine[touching].tolist(), other[touching].tolist())):
                if chunk.classes[a - 1] == neighbour.classes[b - 1]:
                    regions.union((row, col, a), neighbour_index + (b,))


def region_table(chunks: list[ChunkRegions], class_names: tuple[str, ...], crs: Any, transform: Any) -> Any:
    """A GeoDataFrame in ``crs``, one row per region, from the chunks' pieces (see the module docstring);
    ``transform`` maps scene pixel coordinates to ``crs``."""
    import geopandas as gpd
    import shapely
    import shapely.affinity
    from shapely.geometry import shape

    by_index = {c.index: c for c in chunks}
    regions = _UnionFind()
    _join_borders(by_index, regions)
    pieces: dict[tuple[int, int, int], list[Any]] = {}
    totals: dict[tuple[int, int, int], list[float]] = {}
    for chunk in chunks:
        for geometry, label in chunk.shapes:
            root = regions.find(chunk.index + (label,))
            pieces.setdefault(root, []).append(shape(geometry))
        for label in range(1, len(chunk.classes) + 1):
            root = regions.find(chunk.index + (label,))
            total = totals.setdefault(root, [float(chunk.classes[label - 1]), 0.0, 0.0])
            total[1] += float(chunk.pixels[label - 1])
            total[2] += float(chunk.probability_sums[label - 1])
    roots = sorted(pieces)
    coefficients = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    geometries = [shapely.affinity.affine_transform(
        shapely.union_all(pieces[r]) if len(pieces[r]) > 1 else pieces[r][0], coefficients) for r in roots]
    pixels = np.array([totals[r][1] for r in roots])
    table = gpd.GeoDataFrame({
        "class": [class_names[int(totals[r][0])] for r in roots],
        "pixels": pixels.astype(np.int64),
        "area_m2": _areas_m2(geometries, crs),
        "mean_probability": np.array([totals[r][2] for r in roots]) / np.maximum(pixels, 1),
    }, geometry=gpd.GeoSeries(geometries, crs=crs), crs=crs)
    return table


def _areas_m2(geometries: list[Any], crs: Any) -> np.ndarray:
    """Square metres: planar in a projected CRS (scaled by its linear unit), geodesic in a geographic one."""
    from pyproj import CRS

    from geoseg_batch.geo.measure import ellipsoid_geod, metres_per_unit

    if CRS.from_user_input(crs).is_geographic:
        geod = ellipsoid_geod(crs)
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geometries], np.float64)
    return np.array([g.area for g in geometries], np.float64) * metres_per_unit(crs) ** 2


def write_polygons(table: Any, path: Any, layer: str, cloud: CloudSettings | None = None) -> Any:
    """Write the regions as a GeoPackage layer (an empty layer when there are none) at ``path`` (in object
    storage: built locally and uploaded, with ``cloud``); returns ``path``."""
    where = output_location(str(path))
    with storage_for(where, cloud).local_copy(where) as local:
        table.to_file(local, driver="GPKG", layer=layer, engine="pyogrio", geometry_type="Polygon"
                      if len(table) == 0 else None)
    return path


def submit_regions(client: Any, store: Any, mask_nodata: int, probability_scale: float | None,
                   cloud: CloudSettings | None = None, priority: int = 0) -> list[Any]:
    """One :func:`chunk_regions` task per chunk of the store's mask on ``client`` (Dask ``priority``); their
    futures."""
    import zarr

    mask = zarr.open_group(str(store), mode="r", storage_options=zarr_storage_options(store, cloud))["mask"]
    return [client.submit(chunk_regions, str(store), window, index, mask_nodata, probability_scale, cloud,
                          pure=False, priority=priority) for index, window in block_windows(mask.shape, mask.chunks)]


def store_polygons(chunks: list[ChunkRegions], store: Any, out: Any, layer: str,
                   cloud: CloudSettings | None = None) -> Any:
    """Join the chunks' regions of ``store`` and write them to the GeoPackage ``out``, in the store's CRS."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    dataset = xr.open_zarr(str(store), storage_options=zarr_storage_options(store, cloud))
    classes = tuple(dataset["mask"].attrs["classes"])
    table = region_table(chunks, classes, dataset.rio.crs, dataset.rio.transform())
    return write_polygons(table, out, layer, cloud)
