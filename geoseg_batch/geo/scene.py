"""Opening a scene: lazily, on the tile grid, with its bands, nodata, masks and scaling checked.

:func:`open_scene` validates a GeoTIFF/COG against a bundle at the edge (CRS present, bands
by name or index, band count) and returns a :class:`Scene`: the lazily opened raster
(rioxarray; nothing is read), with the georeferencing left on the xarray object (the
``spatial_ref`` coordinate, as rioxarray keeps it), and the band numbers, per-band
scale/offset and nodata that turn raw values into model input. Tiles read their own
windows; integer data stays integer until a window is normalized, in float32.

Masks: a GDAL per-dataset mask (an internal ``.msk`` band) or an alpha band marks pixels as
nodata, like the nodata value (``Scene.masked``: tiles read the mask of their own window).
An alpha band (colour interpretation alpha) is never chosen as a data band unless ``bands``
names it. A scene georeferenced by GCPs only (Sentinel-1 GRD) is read through a warped view
onto the GCPs' CRS (:func:`gcp_grid`), and its outputs are on that grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg_batch.errors import ConfigError, DataError, MissingInputError
from geoseg_batch.io.urls import READ_ONLY, Location, gdal_path, is_url, location, protocol, sibling
from geoseg_batch.io.urls import stem as url_stem
from geoseg_batch.model.bundle import BundleMetadata

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings


@dataclass(frozen=True)
class Resampled:
    """The grid a warped scene is read on, and the kernel: when resampled, the same CRS and origin and
    the bundle's pixel size; for a GCP scene (``gcp_crs``), the GCPs' CRS and GDAL's suggested grid.

    When it downsamples, GDAL's warper widens bilinear and cubic by the scale factor, so each
    output pixel weighs all the input pixels under it (a checkerboard comes out ~0.5), where
    nearest picks one of them.
    """

    shape: tuple[int, int]  # (rows, cols)
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    method: str = "bilinear"  # a rasterio.enums.Resampling name
    gcp_crs: str | None = None  # the source is georeferenced by GCPs in this CRS (warped from them)
    alpha: bool = False  # the view adds an alpha band: the warp's footprint and the source's mask

    def warped(self, src: Any, nodata: float | None) -> Any:
        """``src`` (an open rasterio dataset) seen on this grid: a WarpedVRT, read window by window."""
        from affine import Affine
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        extra: dict[str, Any] = {} if nodata is None else {"src_nodata": nodata, "nodata": nodata}
        if self.gcp_crs is not None:  # GDAL's own grid for the GCPs (rasterio warps from the GCPs only then)
            return WarpedVRT(src, crs=self.gcp_crs, resampling=Resampling[self.method], add_alpha=self.alpha, **extra)
        return WarpedVRT(src, crs=src.crs, transform=Affine(*self.transform), height=self.shape[0],
                         width=self.shape[1], resampling=Resampling[self.method], add_alpha=self.alpha, **extra)


def gcp_grid(src: Any, method: str = "bilinear") -> Resampled | None:
    """The grid a scene georeferenced by GCPs only is read on: GDAL's suggested grid in the GCPs' CRS (as
    ``gdalwarp`` makes it), read with ``method``; None when ``src`` has a CRS or no GCPs."""
    from rasterio.vrt import WarpedVRT

    gcps, crs = src.gcps
    if src.crs is not None or not gcps or crs is None:
        return None
    with WarpedVRT(src, crs=crs) as view:
        shape, transform = (view.height, view.width), tuple(view.transform)[:6]
    return Resampled(shape, transform, method, gcp_crs=crs.to_wkt(), alpha=src.nodata is None)


def resampled_grid(src: Any, resolution_m: float, method: str = "bilinear") -> Resampled | None:
    """The grid of ``src`` at ``resolution_m`` metres (in degrees at the scene's centre for a geographic CRS),
    read with the ``method`` kernel; None when the scene already has that pixel size."""
    from pyproj import CRS

    from geoseg_batch.geo.measure import ellipsoid_geod, metres_per_unit

    transform = src.transform
    if transform.b or transform.d:
        raise DataError(f"{src.name}: resampling needs a north-up scene (its transform is rotated); "
                        "warp it first, e.g. `gdalwarp IN OUT`, or drop --resample")
    crs = CRS.from_user_input(src.crs)
    if crs.is_geographic:
        geod = ellipsoid_geod(crs)
        lon, lat = transform.c + transform.a * src.width / 2, transform.f + transform.e * src.height / 2  # north-up
        east = geod.inv(lon - 0.5, lat, lon + 0.5, lat)[2]  # metres per degree, at the centre
        north = geod.inv(lon, lat - 0.5, lon, lat + 0.5)[2]
        x_size, y_size = resolution_m / east, resolution_m / north
    else:
        x_size = y_size = resolution_m / metres_per_unit(crs)
    if abs(x_size - abs(transform.a)) <= 1e-6 * x_size and abs(y_size - abs(transform.e)) <= 1e-6 * y_size:
        return None
    shape = (max(1, round(src.height * abs(transform.e) / y_size)),
             max(1, round(src.width * abs(transform.a) / x_size)))
    return Resampled(shape, (x_size, 0.0, transform.c, 0.0, -y_size, transform.f), method)


@dataclass(frozen=True)
class Scene:
    """A lazily opened scene and what is needed to turn its pixels into model input."""

    path: Location  # a Path, or an object-storage URL (str)
    data: Any  # xarray.DataArray (band, y, x), lazily indexed
    band_indexes: tuple[int, ...]  # 1-based band numbers used, in the bundle's order
    nodata: float | None
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    resampled: Resampled | None = None  # the grid it is read on, when warped (resampled, or from GCPs)
    masked: bool = False  # a GDAL mask (per-dataset mask, alpha band, a warp's footprint) marks nodata too
    cloud: CloudSettings | None = None  # object storage settings, for a scene read from a URL
    source: str = ""  # what GDAL opens: the path, /vsis3/bucket/key, or a VRT's XML (a STAC Item's bands)

    @property
    def dataset(self) -> str:
        """The name GDAL opens the scene's file by (``source``, else the path's)."""
        return self.source or gdal_path(self.path)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return int(self.data.sizes["y"]), int(self.data.sizes["x"])

    @property
    def geobox(self) -> Any:
        """The grid the scene is read on, as an odc-geo ``GeoBox``: shape, affine (rioxarray's, as
        recorded on the data) and CRS."""
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, self.data.rio.transform(), self.data.rio.crs)


def _band_choice(path: Location, descriptions: tuple[str | None, ...], metadata: BundleMetadata,
                 bands: list[str] | list[int] | None, alpha: tuple[int, ...] = ()) -> tuple[int, ...]:
    """1-based band numbers to feed the model, in the bundle's band order.

    ``alpha``: the numbers of the file's alpha bands. Without ``bands`` they are never chosen:
    the other bands are chosen by name when all are named, and a file with an alpha band whose
    bands are not named is refused (GDAL marks band 4 of any 4-band byte GeoTIFF as alpha, so
    the band count alone cannot tell RGBA from RGB+NIR).
    """
    count = len(descriptions)
    if bands is None:
        data = [n for n in range(1, count + 1) if n not in alpha]
        named = [descriptions[n - 1] for n in data if descriptions[n - 1]]
        if len(named) == len(data) and set(metadata.band_names) <= set(named):
            return tuple(data[named.index(name)] for name in metadata.band_names)
        expected = f"the model expects {metadata.bands} ({', '.join(metadata.band_names)})"
        if alpha:
            numbers = ",".join(map(str, alpha))
            example = f", e.g. --bands {','.join(map(str, data[:metadata.bands]))}" if len(data) >= metadata.bands else ""
            raise DataError(
                f"{path}: {count} bands, of which band {numbers} is an alpha band (read as the nodata mask, fed as "
                f"data only when --bands names it), but {expected}; pass --bands to choose them by name or "
                f"number{example}")
        if count != metadata.bands:
            raise DataError(f"{path}: {count} bands, but {expected}; pass --bands to choose them by name or number")
        return tuple(data)
    if len(bands) != metadata.bands:
        raise DataError(f"{path}: --bands lists {len(bands)} bands, but the model expects {metadata.bands}")
    chosen = []
    for band in bands:
        if isinstance(band, int) or str(band).isdigit():
            number = int(band)
            if not 1 <= number <= count:
                raise DataError(f"{path}: band number {number} out of range 1..{count}")
            chosen.append(number)
        elif band in descriptions:
            chosen.append(descriptions.index(band) + 1)
        else:
            raise DataError(f"{path}: no band named {band!r} (bands: {list(descriptions)}); use names or numbers 1..{count}")
    return tuple(chosen)


def scene_paths(scenes: list[Location | str], scene_list: Location | str | None = None,
                cloud: CloudSettings | None = None) -> list[Location]:
    """The scenes a job names: paths, URLs and glob patterns (expanded, sorted; URL patterns through fsspec),
    then a list file's lines (relative to it; the list may itself be a URL).

    A pattern that matches nothing, or a list file that is missing, is an error: a nightly
    run pointed at the wrong folder should fail, not publish an empty result.
    """
    import glob

    from geoseg_batch.io.remote import CloudSettings, expand, read_text

    cloud = cloud or CloudSettings.of()
    found: list[Location] = []
    for entry in scenes:
        entry = _location(entry, "scenes")
        if glob.has_magic(str(entry)):
            matches: list[Location] = expand(entry, cloud) if is_url(entry) else sorted(
                Path(m) for m in glob.glob(str(entry)))
            if not matches:
                raise MissingInputError(f"scenes: pattern {str(entry)!r} matches no files; check the folder and the "
                                         "pattern (relative ones are taken from the current directory)")
            found.extend(matches)
        else:
            found.append(entry)
    if scene_list is not None:
        scene_list = _location(scene_list, "scene_list")
        if is_url(scene_list):
            text = read_text(scene_list, cloud)
        elif not scene_list.is_file():
            raise MissingInputError(f"scene_list: {scene_list} does not exist; give a text file with one path per line")
        else:
            text = scene_list.read_text()
        lines = [line.strip() for line in text.splitlines()]
        found.extend(sibling(scene_list, line) for line in lines if line and not line.startswith("#"))
    return list(dict.fromkeys(found))  # a scene named twice is predicted once


def _location(value: Location | str, key: str) -> Location:
    """``value`` as a Path or URL; ConfigError naming ``key`` for an unusable URL."""
    try:
        return location(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _require_scene(path: Location, cloud: CloudSettings | None) -> None:
    """Raise MissingInputError unless the scene file (or object) exists; ConfigError when the store refuses."""
    from geoseg_batch.io.remote import CloudSettings, object_info

    if is_url(path):
        if protocol(path) not in READ_ONLY:  # an HTTP file is checked by GDAL's open
            object_info(str(path), cloud or CloudSettings.of())
        return
    if not Path(path).exists():
        raise MissingInputError(f"{path}: no such scene file; check the path (relative paths are taken from the "
                                 "current directory)")


@dataclass(frozen=True)
class _FileFacts:
    """What :func:`open_scene` checks in a scene file's header."""

    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    nodata: float | None
    alpha: tuple[int, ...]  # 1-based numbers of the alpha bands
    mask_flags: tuple[Any, ...]  # per band: rasterio MaskFlags


def _file_facts(path: Location, source: str) -> _FileFacts:
    """The header facts of the scene at ``path`` (opened by GDAL as ``source``): raises DataError when unreadable
    or not georeferenced (no CRS, and no GCPs with a CRS)."""
    import rasterio
    from rasterio.enums import ColorInterp

    try:
        with rasterio.open(source) as src:
            gcps, gcp_crs = src.gcps
            facts = _FileFacts(tuple(src.descriptions), src.scales, src.offsets, src.nodata,
                               tuple(n for n, c in enumerate(src.colorinterp, 1) if c == ColorInterp.alpha),
                               tuple(src.mask_flag_enums))
            crs = src.crs
    except rasterio.errors.RasterioIOError as exc:
        reason = str(exc).rstrip(".")
        raise DataError(f"{path}: not a readable raster (truncated or not a GeoTIFF?): {reason}; check it with "
                        "`gdalinfo`, and copy or export it again") from None
    if crs is None and not (gcps and gcp_crs is not None):
        raise DataError(
            f"{path}: the scene has no CRS; outputs could not be georeferenced. Assign one first, "
            "e.g. `gdal_edit.py -a_srs EPSG:32633 FILE`"
        )
    return facts


def _view(path: Location, source: str, metadata: BundleMetadata, nodata: float | None, masked: bool,
          resample: bool, resampling: str, source_alpha: bool = False) -> Resampled | None:
    """The warped grid the scene at ``path`` is read on (GCPs, ``resample``), or None: read as it is.

    A masked scene without nodata value is warped with an alpha band (an alpha band of the
    source becomes the view's own), so its mask survives the warp."""
    import rasterio

    with rasterio.open(source) as src:
        view = gcp_grid(src, resampling)
        if view is not None:
            view = dataclasses.replace(view, alpha=nodata is None)
        if not resample:
            return view
        if metadata.resolution_m is None:
            raise DataError(f"{path}: --resample needs the bundle's training resolution, which it does not record; "
                            "retrain with data.resolution_m (train --resolution-m M) or drop --resample")
        if view is not None:
            raise DataError(f"{path}: --resample of a scene georeferenced by GCPs is not supported; warp it onto "
                            f"a grid first, e.g. `gdalwarp -r {resampling} {path} {url_stem(path)}_warped.tif`, "
                            f"and predict that")
        resampled = resampled_grid(src, metadata.resolution_m, resampling)
    if resampled is None:
        return None
    return dataclasses.replace(resampled, alpha=nodata is None and masked and not source_alpha)


def open_scene(path: Location | str, metadata: BundleMetadata, bands: list[str] | list[int] | None = None,
               nodata: float | None = None, resample: bool = False, resampling: str = "bilinear",
               cloud: CloudSettings | None = None, source: str | None = None) -> Scene:
    """Open ``path`` (a file, or an object-storage URL read over GDAL's /vsis3/ and kin) lazily, checked against
    the bundle; with ``resample``, on the bundle's resolution (``resampling``: the kernel, a
    rasterio.enums.Resampling name); GCP scenes through a warped view. ``cloud``: the object storage
    settings of a URL (default: the environment's). ``source``: what GDAL opens instead of the path's file (a
    STAC Item's VRT, :mod:`geoseg_batch.stac.item_scene`; ``path`` then only names the scene)."""
    import rasterio
    import rioxarray
    from rasterio.enums import MaskFlags

    from geoseg_batch.io.remote import CloudSettings

    path = path if source is not None else _location(path, "scenes")
    if is_url(path) or source is not None:
        cloud = cloud or CloudSettings.of()
        cloud.apply()
    if source is None:
        _require_scene(path, cloud)
    source = source if source is not None else gdal_path(path)  # the path itself, or /vsis3/bucket/key
    facts = _file_facts(path, source)
    chosen = _band_choice(path, facts.descriptions, metadata, bands, facts.alpha)
    nodata = nodata if nodata is not None else facts.nodata
    masked = any(MaskFlags.per_dataset in facts.mask_flags[b - 1] for b in chosen)
    view = _view(path, source, metadata, nodata, masked, resample, resampling, bool(facts.alpha))
    opened: Any = source
    if view is not None:  # rioxarray reads the VRT's grid; the VRT keeps its source dataset open
        opened = view.warped(rasterio.open(source), nodata)
    data = rioxarray.open_rasterio(opened, lock=False, mask_and_scale=False, cache=False)  # lazy: reads nothing
    data = data.isel(band=[b - 1 for b in chosen])
    return Scene(
        path=path,
        data=data,
        band_indexes=chosen,
        nodata=nodata,
        scales=tuple(float(facts.scales[b - 1]) for b in chosen),
        offsets=tuple(float(facts.offsets[b - 1]) for b in chosen),
        resampled=view,
        masked=masked or (view is not None and view.alpha),
        cloud=cloud if is_url(path) or source != gdal_path(path) else None,
        source=source,
    )


def normalize_in_place(values: np.ndarray, scene: Any, metadata: BundleMetadata, float_source: bool) -> np.ndarray:
    """Turn raw pixel-major ``values`` (rows, cols, bands) float32 into model input in place; the valid mask.

    Scale/offset and normalization are one affine map per band. A pixel is nodata when any
    band equals the nodata value or (float data) is not finite; nodata pixels become 0, the
    normalized mean. Pixel-major because that is the model's layout and, for pixel-interleaved
    files, GDAL's fast path: no transpose, no temporary scene-window copies.
    """
    rows, cols, bands = values.shape
    std = np.maximum(np.asarray(metadata.normalization["std"], np.float32), np.float32(1e-6))
    gain = np.asarray(scene.scales, np.float32) / std
    bias = (np.asarray(scene.offsets, np.float32) - np.asarray(metadata.normalization["mean"], np.float32)) / std
    check_finite = float_source
    if scene.nodata is not None and not np.isnan(scene.nodata):  # NaN nodata: caught as non-finite
        # Marked NaN, nodata is caught by the finite check below: cheaper than an any() over 14 bands.
        np.copyto(values, np.float32(np.nan), where=values == np.float32(scene.nodata))
        check_finite = True
    # A row of pixels is contiguous: the affine map over it runs as one long loop, not one per pixel.
    pixel_rows = _pixel_rows(values)
    pixel_rows *= np.tile(gain, cols)
    pixel_rows += np.tile(bias, cols)
    if not check_finite:
        return np.ones((rows, cols), bool)
    # A band sum is finite exactly when every band is (or it overflows: garbage anyway).
    invalid = ~np.isfinite(values @ np.ones(bands, np.float32))
    if invalid.any():
        values[invalid] = 0.0
    return ~invalid


def _pixel_rows(values: np.ndarray) -> np.ndarray:
    """(rows, cols * bands) view of pixel-major ``values`` whose (cols, bands) planes are contiguous."""
    rows, cols, bands = values.shape
    if values.strides[1:] != (bands * values.itemsize, values.itemsize):
        raise ValueError(f"values must have contiguous pixel rows, got strides {values.strides}")
    return np.lib.stride_tricks.as_strided(values, (rows, cols * bands), (values.strides[0], values.itemsize))
