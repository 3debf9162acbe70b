"""The per-scene zarr store: probabilities and class mask, one chunk per tile, georeferenced.

The store is created up front with every variable's metadata, the x/y coordinates and the
CF ``spatial_ref`` coordinate (written by rioxarray), and nothing else: chunks that were
never written read as the fill value, which is the nodata value. Tiles then write their own
chunks (region writes aligned to the chunk grid, so writers never touch the same chunk).

It reads back two ways: ``xr.open_zarr(path)`` with ``.rio.crs`` / ``.rio.transform()``
(``spatial_ref`` comes back as a coordinate), and GDAL (``ZARR:"path":/mask``), which takes
the CRS from the ``_CRS`` attribute and the geotransform from the regular x/y arrays.
Zarr format 2 by default: GDAL up to 3.10 (and so rasterio's wheels) cannot read v3.
GDAL also sees no geotransform for a rotated grid (no 1-D x/y coordinates: rioxarray reads
spatial_ref's ``GeoTransform``) nor for an axis one pixel long (:func:`gdal_georeferencing`).

Completion: after a tile's chunks are written, an empty record file named after the tile
is created in the target's ``done_dir`` (beside the store, not in it); a re-run of the same
job skips the recorded tiles, which is what makes a killed run resumable.

In object storage (``s3://...`` paths, with the target's ``cloud`` settings), workers write
their chunks straight to the store through fsspec, and the completion records are empty
objects under ``done_dir``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.geo.grid import Window
from geoseg_batch.io.urls import is_url, split

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

MASK_NODATA = 255
PROBABILITY_NODATA_UINT8 = 255
PROBABILITY_SCALE = 250  # uint8 probabilities: round(p * 250); 251..254 unused, 255 nodata


@dataclass(frozen=True)
class ZarrTarget:
    """Where and how a scene's outputs are written (picklable: tasks carry it)."""

    path: str
    float_output: bool
    threshold: float
    binary: bool
    zarr_format: int = 2
    done_dir: str | None = None  # tile completion records (resume), outside the store so readers never see them
    cloud: CloudSettings | None = None  # object storage settings, for URL paths (plain data, no secrets)

    def mark_done(self, index: tuple[int, int]) -> None:
        """Record tile ``index`` as written (after its chunks are), so a re-run skips it."""
        if self.done_dir is None:
            return
        name = f"{index[0]}-{index[1]}"
        if is_url(self.done_dir):
            self._filesystem().pipe_file(f"{split(self.done_dir)[1]}/{name}", b"")
        else:
            Path(self.done_dir, name).touch()

    def done_tiles(self) -> set[tuple[int, int]]:
        """Indices of the tiles recorded as written."""
        return {tuple(int(n) for n in name.split("-")) for name in self._records()}  # type: ignore[misc]

    def _records(self) -> list[str]:
        """The names of the completion records."""
        if self.done_dir is None:
            return []
        if not is_url(self.done_dir):
            return os.listdir(self.done_dir) if Path(self.done_dir).is_dir() else []
        try:
            found = self._filesystem().ls(split(self.done_dir)[1], detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [name.rsplit("/", 1)[-1] for name in found]

    def _filesystem(self) -> Any:
        """The fsspec filesystem of the (URL) store, with the target's settings."""
        from geoseg_batch.io.remote import CloudSettings

        return (self.cloud or CloudSettings.of()).filesystem(split(self.path)[0])

    def exists(self) -> bool:
        """Whether the store is there."""
        return store_exists(self.path, self.cloud)

    def storage_options(self) -> dict[str, Any] | None:
        """What zarr and xarray open the store with: fsspec's storage options for a URL; None for a path."""
        return zarr_storage_options(self.path, self.cloud)

    def write(self, core: Window, probabilities: np.ndarray, valid: np.ndarray) -> None:
        """Write one tile: ``probabilities`` (rows, cols, channels) float32, ``valid`` (rows, cols)."""
        import zarr

        group = zarr.open_group(self.path, mode="r+", zarr_format=self.zarr_format,
                                storage_options=self.storage_options())
        rows, cols = core.slices()
        group["mask"][rows, cols] = class_mask(probabilities, valid, self.threshold, self.binary)
        group["probabilities"][:, rows, cols] = encoded_probabilities(probabilities, valid, self.binary,
                                                                      self.float_output)


def class_mask(probabilities: np.ndarray, valid: np.ndarray, threshold: float, binary: bool) -> np.ndarray:
    """uint8 class ids (rows, cols), MASK_NODATA where not valid."""
    classes = (probabilities[..., 0] >= threshold) if binary else probabilities.argmax(-1)
    return np.where(valid, classes.astype(np.uint8), np.uint8(MASK_NODATA))


def encoded_probabilities(probabilities: np.ndarray, valid: np.ndarray, binary: bool,
                          float_output: bool) -> np.ndarray:
    """(channels, rows, cols): float32 with NaN nodata, or uint8 0..250 with 255 nodata."""
    values = np.moveaxis(probabilities[..., :1] if binary else probabilities, -1, 0)
    if float_output:
        return np.where(valid, values, np.float32(np.nan)).astype(np.float32)
    scaled = np.round(np.clip(values, 0.0, 1.0) * PROBABILITY_SCALE).astype(np.uint8)
    return np.where(valid, scaled, np.uint8(PROBABILITY_NODATA_UINT8))


def store_exists(path: Any, cloud: CloudSettings | None = None) -> bool:
    """Whether a store (a local directory, or objects under a URL prefix, asked with ``cloud``) is at ``path``."""
    if not is_url(str(path)):
        return Path(path).exists()
    from geoseg_batch.io.remote import CloudSettings, store_errors

    settings = cloud or CloudSettings.of()
    with store_errors(str(path), settings):
        return bool(settings.filesystem(split(str(path))[0]).exists(split(str(path))[1]))


def zarr_storage_options(path: Any, cloud: CloudSettings | None) -> dict[str, Any] | None:
    """fsspec's storage options to open the store at ``path`` with (``cloud``'s, for a URL); None for a path."""
    if not is_url(str(path)):
        return None
    from geoseg_batch.io.remote import CloudSettings

    return (cloud or CloudSettings.of()).storage_options(split(str(path))[0])


def rotated(affine: Any) -> bool:
    """Whether ``affine`` rotates or shears (its grid has no 1-D x/y coordinates)."""
    return bool(affine.b or affine.d)


def gdal_georeferencing(geobox: Any, zarr_format: int = 2) -> str:
    """Which readers see the georeferencing of a store on ``geobox``: "GDAL and rioxarray", or why GDAL
    (3.6 .. 3.10, as tested) does not; the COGs carry it for every grid.

    GDAL's Zarr driver takes the CRS from ``_CRS`` and derives the geotransform from regular 1-D
    x/y coordinates: not for a rotated grid (rioxarray reads spatial_ref's ``GeoTransform``),
    nor from an axis one pixel long; and it does not open zarr-python's format 3 stores.
    """
    if zarr_format == 3:
        return "rioxarray only: GDAL (up to 3.10) does not open zarr format 3 stores; the COGs carry it"
    if rotated(geobox.affine):
        return "rioxarray only: GDAL derives geotransforms from x/y coordinates, which a rotated grid has not"
    if min(geobox.shape) < 2:
        return "rioxarray only: GDAL cannot derive a pixel size from an axis one pixel long"
    return "GDAL and rioxarray"


def create_store(path: Any, geobox: Any, tile: int, class_names: tuple[str, ...], threshold: float | None,
                 float_output: bool = False, zarr_format: int = 2, done_dir: Any | None = None,
                 cloud: CloudSettings | None = None) -> ZarrTarget:
    """Create the store's metadata and coordinates on ``geobox`` (an odc-geo ``GeoBox``: shape, affine,
    CRS), chunked ``tile`` x ``tile``; returns the target that tiles write through.

    The x/y coordinates are the pixel centres of the affine (as rioxarray derives them when
    it opens a raster), the CRS is written as rioxarray's ``spatial_ref`` and GDAL's ``_CRS``.
    With ``done_dir``, tiles record their completion there; when the store and records
    already exist (a resumed run), the store is kept as it is. ``path`` and ``done_dir`` may be
    object-storage locations (``s3://...``), written with ``cloud``.
    """
    binary = len(class_names) == 2
    target = ZarrTarget(str(path), float_output, threshold, binary, zarr_format,
                        None if done_dir is None else str(done_dir), cloud if is_url(str(path)) else None)
    if done_dir is not None and not is_url(str(done_dir)):
        Path(done_dir).mkdir(parents=True, exist_ok=True)
    if done_dir is not None and target.done_tiles() and target.exists():
        return target  # a resumed run: the store was created before its first tile was recorded
    import dask.array as da
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from rasterio.crs import CRS
    from rioxarray.rioxarray import affine_to_coords

    rows, cols = geobox.shape
    names = [class_names[1]] if binary else list(class_names)
    probability_dtype, probability_fill = (np.float32, np.nan) if float_output else (np.uint8, PROBABILITY_NODATA_UINT8)
    # One Dask chunk per variable, never computed: to_zarr(compute=False) writes the metadata alone, and a graph
    # of one task per zarr chunk would cost the client ~0.5 ms and kilobytes per chunk of the grid.
    dataset = xr.Dataset(
        {
            "mask": (("y", "x"), da.full((rows, cols), MASK_NODATA, dtype=np.uint8, chunks=-1)),
            "probabilities": (("band", "y", "x"), da.full((len(names), rows, cols), probability_fill,
                                                          dtype=probability_dtype, chunks=-1)),
        },
        # A rotated grid has no 1-D x/y coordinates: rioxarray then reads spatial_ref's GeoTransform.
        coords={**({} if rotated(geobox.affine) else affine_to_coords(geobox.affine, cols, rows)), "band": names},
    )
    crs = CRS.from_user_input(str(geobox.crs))  # odc-geo keeps the CRS as it was given (EPSG code or WKT)
    dataset = dataset.rio.write_crs(crs).rio.write_transform(geobox.affine)
    gdal_crs = {"wkt": crs.to_wkt()}
    dataset["mask"].attrs.update({"_CRS": gdal_crs, "classes": list(class_names), "threshold": threshold,
                                  "long_name": "class mask"})
    dataset["probabilities"].attrs.update({
        "_CRS": gdal_crs,
        "long_name": "probability",
        "scale_factor_note": "" if float_output else f"uint8: probability = value / {PROBABILITY_SCALE}",
    })
    # Update, not replace: rioxarray keeps grid_mapping in the encoding. xarray does not list a
    # scalar coordinate under "coordinates" by itself, and without it open_zarr drops spatial_ref.
    link = {"coordinates": "spatial_ref", "grid_mapping": "spatial_ref"}
    dataset["mask"].encoding.update({**link, "_FillValue": MASK_NODATA, "chunks": (tile, tile)})
    dataset["probabilities"].encoding.update({**link, "_FillValue": probability_fill,
                                              "chunks": (len(names), tile, tile)})
    dataset.to_zarr(str(path), mode="w", compute=False, zarr_format=zarr_format, consolidated=zarr_format == 2,
                    storage_options=target.storage_options())
    return target
