"""Quicklook PNGs of raster files (scene, probabilities, class mask), read decimated.

A raster is read with ``out_shape=`` (GDAL serves it from the COG's overviews): never at
full resolution. :func:`quicklook_figure` returns the figure, :func:`quicklook_png`
writes it, :func:`prediction_quicklooks` makes all three of a predict output.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from geoseg_batch.errors import DataError, InputError, MissingInputError
from geoseg_batch.infer.thumbnail import QUICKLOOK_SIDE
from geoseg_batch.report.canvas import DPI, class_colours, class_legend_handles, new_figure, save_png
from geoseg_batch.report.checks import require_positive_int
from geoseg_batch.report.rgb import rgb_band_indices, rgb_composite

log = logging.getLogger(__name__)

QuicklookKind = Literal["scene", "probabilities", "mask"]
_QUICKLOOK_KINDS = ("scene", "probabilities", "mask")
_NODATA_BACKGROUND = "#d9d9d9"  # light grey shows through transparent (nodata) pixels

QUICKLOOK_SOURCES = {"scene": "scene", "probabilities": "probability_cog", "mask": "mask_cog"}  # kind: output key
QUICKLOOK_FULL_READ_PIXELS = 16_000_000  # a raster without overviews is read whole to decimate it
QUICKLOOK_REMOTE_READ_PIXELS = 1_000_000  # the same over HTTP (/vsis3/...): a whole read is a download of it


def _decimated_shape(rows: int, cols: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) scaled so the longer side is at most ``max_side`` (never enlarged)."""
    scale = max(rows, cols) / max_side
    if scale <= 1.0:
        return rows, cols
    return max(1, round(rows / scale)), max(1, round(cols / scale))


def _raster(source: str | Path) -> Any:
    """``source`` as the quicklook functions take it: a Path, or (a STAC Item's stacked bands) a VRT's XML text."""
    return source if str(source).startswith("<") else Path(source)


def raster_name(raster: Any) -> str:
    """How a quicklook names ``raster``: its file name ("VRT" for a VRT's XML text)."""
    return "VRT" if str(raster).startswith("<") else Path(raster).name


def _open_raster(raster: Path) -> Any:
    """The open rasterio dataset of ``raster``; raises the input errors (directory, missing, unreadable) plainly."""
    import rasterio

    remote = str(raster).startswith(("/vsi", "<"))  # GDAL's virtual file systems (/vsis3/...), a VRT's XML
    if not remote and raster.is_dir():
        raise InputError(
            f"quicklook {raster}: received a directory (a zarr store?), expected a raster file; "
            "pass the COG written beside it (<scene>_mask.tif or <scene>_probabilities.tif)"
        )
    if not remote and not raster.exists():
        raise MissingInputError(f"quicklook {raster}: file not found")
    try:
        return rasterio.open(raster)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"quicklook {raster}: not a raster GDAL can read ({exc})") from exc


def _read_decimated(src: Any, indexes: list[int], shape: tuple[int, int], resampling: Any) -> np.ndarray:
    """Bands ``indexes`` (1-based) at ``shape`` as float64 (bands, rows, cols), NaN where nodata/masked.

    ``out_shape`` makes GDAL read from the best overview (COGs have them) instead of the
    full-resolution image; the full-resolution array never exists here.
    """
    data = src.read(indexes, out_shape=(len(indexes), *shape), resampling=resampling, masked=True)
    return np.ma.filled(data.astype(np.float64), np.nan)


def _blank_quicklook(shape: tuple[int, int], side_panel: bool) -> tuple[Figure, Axes]:
    """A figure and its one tick-less axes, sized to show ``shape`` pixels at about one screen pixel each."""
    rows, cols = shape
    width = max(cols / DPI, 3.2) + (1.3 if side_panel else 0.2)
    height = max(rows / DPI, 2.0) + 0.7
    fig = new_figure(width, height)
    ax = fig.subplots()
    ax.set_facecolor(_NODATA_BACKGROUND)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig, ax


def _scene_quicklook(src: Any, shape: tuple[int, int], ax: Axes) -> str:
    """The caption detail (bands shown, stretch) after drawing the scene's RGB composite on ``ax``."""
    from rasterio.enums import Resampling

    names = [d or f"band {i + 1}" for i, d in enumerate(src.descriptions)]
    picked = rgb_band_indices(names)
    unique = sorted(set(picked))
    bands = _read_decimated(src, [i + 1 for i in unique], shape, Resampling.average)
    stack = np.stack([bands[unique.index(i)] for i in picked], axis=-1)  # (rows, cols, 3) red, green, blue
    return _rgb_drawn(stack, [names[i] for i in picked], ax)


def _rgb_drawn(stack: np.ndarray, names: list[str], ax: Axes) -> str:
    """The caption detail (bands shown, stretch) after drawing ``stack`` (rows, cols, 3: the bands ``names`` as red,
    green, blue; NaN: nodata) as an RGB composite on ``ax``."""
    rgb = rgb_composite(stack, ("red", "green", "blue"))
    alpha = np.any(np.isfinite(stack), axis=-1).astype(np.float32)  # nodata in every band: transparent
    ax.imshow(np.concatenate([rgb, alpha[..., None]], axis=-1))
    return f"RGB = {','.join(dict.fromkeys(names))}, 2-98% stretch"


def _probabilities_quicklook(src: Any, shape: tuple[int, int], fig: Figure, ax: Axes) -> str:
    """The caption detail (what is shown) after drawing the probabilities (0-1, colour bar) on ``ax``."""
    from rasterio.enums import Resampling

    from geoseg_batch.io.zarr_store import PROBABILITY_SCALE

    values = _read_decimated(src, list(range(1, src.count + 1)), shape, Resampling.average)
    if np.issubdtype(np.dtype(src.dtypes[0]), np.integer):  # uint8 0..250 encoding (255 nodata, masked above)
        values = np.clip(values / PROBABILITY_SCALE, 0.0, 1.0)
    if values.shape[0] > 1:
        with np.errstate(all="ignore"):
            shown = np.where(np.isfinite(values).any(axis=0), np.nanmax(np.nan_to_num(values, nan=-np.inf), axis=0),
                             np.nan)
        label = "max class probability"
    else:
        shown, label = values[0], "probability"
    cmap = colormaps["magma"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    return label


def _mask_quicklook(src: Any, shape: tuple[int, int], fig: Figure, ax: Axes) -> str:
    """The caption detail (number of classes) after drawing the class mask and its legend."""
    from rasterio.enums import Resampling

    classes = _read_decimated(src, [1], shape, Resampling.nearest)[0]
    finite = np.isfinite(classes)
    top = int(classes[finite].max()) if finite.any() else 1
    num_classes = max(2, top + 1)
    cmap, norm = class_colours(num_classes)
    cmap = cmap.with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    ax.imshow(np.ma.masked_invalid(classes), cmap=cmap, norm=norm, interpolation="nearest")
    handles = class_legend_handles(cmap, num_classes)
    handles.append(Patch(facecolor=_NODATA_BACKGROUND, edgecolor="black", label="nodata"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return f"{num_classes} classes"


def quicklook_figure(raster: Path, kind: QuicklookKind, max_side: int = QUICKLOOK_SIDE) -> Figure:
    """The quicklook of :func:`quicklook_png`, as a Figure (nothing written)."""
    raster = _raster(raster)
    if kind not in _QUICKLOOK_KINDS:
        raise InputError(f"quicklook kind: received {kind!r}, expected one of {', '.join(_QUICKLOOK_KINDS)}")
    max_side = require_positive_int(max_side, "max_side", 16)
    with _open_raster(raster) as src:
        shape = _decimated_shape(src.height, src.width, max_side)
        fig, ax = _blank_quicklook(shape, side_panel=kind != "scene")
        if kind == "scene":
            detail = _scene_quicklook(src, shape, ax)
        elif kind == "probabilities":
            detail = _probabilities_quicklook(src, shape, fig, ax)
        else:
            detail = _mask_quicklook(src, shape, fig, ax)
        full_shape = src.shape
    _title(ax, raster_name(raster), kind, detail, full_shape, shape)
    return fig


def _title(ax: Axes, name: str, kind: str, detail: str, full_shape: tuple[int, int], shape: tuple[int, int]) -> None:
    """Title a quicklook's ``ax``: the raster's ``name`` and ``kind``, ``detail``, and its size (rows, cols)
    ``full_shape``, with the ``shape`` it is shown at when smaller; returns None."""
    rows, cols = full_shape
    size = f"{cols}x{rows} px" + (f", shown at {shape[1]}x{shape[0]}" if tuple(shape) != tuple(full_shape) else "")
    ax.set_title(f"{name}: {kind}\n{detail}\n{size}", fontsize=8)


def thumbnail_quicklook_png(stack: np.ndarray, names: list[str], full_shape: tuple[int, int], scene_name: str,
                            out_png: Path) -> Path:
    """The ``"scene"`` quicklook of :func:`quicklook_png` drawn from ``stack`` (rows, cols, 3), a scene of
    ``full_shape`` whose bands ``names`` were averaged by its model tasks (:mod:`~geoseg_batch.infer.thumbnail`)
    rather than read again; ``scene_name`` names the scene in its title. Returns ``out_png``."""
    shape = stack.shape[:2]
    fig, ax = _blank_quicklook(shape, side_panel=False)
    _title(ax, scene_name, "scene", _rgb_drawn(stack, names, ax), full_shape, shape)
    return save_png(fig, out_png)


def quicklook_png(raster: Path, out_png: Path, kind: QuicklookKind, max_side: int = QUICKLOOK_SIDE) -> Path:
    """A PNG of ``raster`` with its longer side at most ``max_side`` pixels; returns ``out_png``.

    The raster (any file rasterio opens: GeoTIFF, COG) is read decimated with
    ``out_shape=``, which GDAL serves from overviews when present: never at full resolution.

    - ``"scene"``: RGB composite of three bands (chosen by
      :func:`~geoseg_batch.report.rgb.rgb_band_indices` from the band descriptions) with the
      2-98 percentile stretch of :func:`~geoseg_batch.report.rgb.rgb_composite`.
    - ``"probabilities"``: a 0..1 colour map (uint8 values are the 0..250 encoding; with
      several bands, the highest class probability).
    - ``"mask"``: discrete class colours, as in :func:`~geoseg_batch.report.samples.plot_samples`.

    Nodata (the file's nodata value or mask, and NaN) is transparent over light grey.
    A zarr store is refused: pass the COG written beside it.
    """
    return save_png(quicklook_figure(raster, kind, max_side), out_png)


def prediction_quicklooks(output: Mapping[str, Any], out_dir: Path, max_side: int = QUICKLOOK_SIDE,
                          name: str | None = None, kinds: tuple[str, ...] = tuple(QUICKLOOK_SOURCES)
                          ) -> list[tuple[str, Path]]:
    """Quicklooks of one predict (or mosaic) output entry (keys ``scene``, ``mask_cog``, ``probability_cog``).

    Writes ``<name>_scene.png``, ``<name>_probabilities.png``, ``<name>_mask.png`` in
    ``out_dir`` for the ``kinds`` whose keys are present (and not None); ``name`` defaults to
    the scene's file stem. Returns ``(caption, png)`` pairs ready for
    :func:`~geoseg_batch.report.html.write_run_report`.
    """
    out_dir = Path(out_dir)
    stem = name or Path(str(output["scene"])).stem
    made: list[tuple[str, Path]] = []
    for kind in kinds:
        key = QUICKLOOK_SOURCES[kind]
        source = output.get(key)
        if source and kind == "scene" and not _cheap_to_decimate(_raster(source)):
            log.info("quicklook of %s skipped: no overviews and too large to decimate cheaply "
                     "(add them with `gdaladdo`)", source)
            continue
        if source:
            png = quicklook_png(_raster(source), out_dir / f"{stem}_{kind}.png", kind, max_side)  # type: ignore[arg-type]
            made.append((f"{stem}: {kind} ({raster_name(source)})", png))
    return made


def _cheap_to_decimate(raster: Path) -> bool:
    """Whether a decimated read is cheap: the raster has overviews, or is small enough to read whole (smaller
    when it is read over the network: object storage is read by ranges, a scene never downloaded whole)."""
    import rasterio

    from geoseg_batch.io.urls import GDAL_PREFIXES

    remote = str(raster).startswith((*GDAL_PREFIXES.values(), "<"))
    with rasterio.open(raster) as src:
        limit = QUICKLOOK_REMOTE_READ_PIXELS if remote else QUICKLOOK_FULL_READ_PIXELS
        return bool(src.overviews(1)) or src.width * src.height <= limit
