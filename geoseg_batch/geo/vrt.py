"""A GDAL VRT that stacks bands of several files onto one grid: the XML text itself, which GDAL opens as a dataset.

A stacked VRT has one band per :class:`StackedBand`, each read from one band of one file
(any GDAL name: a path, ``/vsis3/bucket/key``, ``/vsicurl/https://...``) through its source
rectangle on the stacked grid. The grid is the union of the files' extents at the finest
pixel size (as ``gdalbuildvrt -separate -resolution highest``), or at a pixel size given;
files on a coarser grid are resampled by GDAL when read (nearest, or the kernel given).
Nothing is read to build it but each file's header; the XML is a string, so it travels to
Dask workers without a shared disk, and windowed reads of it read only the blocks under
the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from geoseg_batch.errors import DataError

GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}


@dataclass(frozen=True)
class FileGrid:
    """What a VRT needs of one file's header: size, affine, CRS, data type, block size, nodata, scale, offset."""

    width: int
    height: int
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    crs: str  # WKT
    dtype: str
    block: tuple[int, int]  # (x, y)
    nodata: float | None = None
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class StackedBand:
    """One band of a stacked VRT: its description, and band ``band`` of the file GDAL opens as ``source``."""

    description: str
    source: str
    band: int  # 1-based
    grid: FileGrid
    nodata: float | None = None  # None: the file's
    scale: float | None = None  # None: the file's
    offset: float | None = None


def file_grid(source: str) -> FileGrid:
    """The :class:`FileGrid` of the file GDAL opens as ``source`` (its header only); rasterio's error if unreadable."""
    import rasterio

    with rasterio.open(source) as src:
        if src.crs is None:
            raise DataError(f"{source}: no CRS; bands without one cannot be placed on a grid")
        return FileGrid(src.width, src.height, tuple(src.transform)[:6], src.crs.to_wkt(), src.dtypes[0],
                        (src.block_shapes[0][1], src.block_shapes[0][0]), src.nodata, src.scales[0], src.offsets[0])


def stacked_grid(grids: list[FileGrid], pixel_size: float | None = None) -> tuple[int, int, tuple[float, ...]]:
    """(width, height, affine) of the union of ``grids``' extents at ``pixel_size`` (default: the finest).

    Raises DataError for files in different CRSs or on rotated grids (they would need warping)."""
    from rasterio.crs import CRS

    first = CRS.from_wkt(grids[0].crs)
    for grid in grids:
        if grid.transform[1] or grid.transform[3]:
            raise DataError("bands on a rotated grid cannot be stacked; warp them first (gdalwarp)")
        if CRS.from_wkt(grid.crs) != first:
            raise DataError(f"bands in different CRSs ({first.to_string()} and "
                            f"{CRS.from_wkt(grid.crs).to_string()}) cannot be stacked without warping; warp them "
                            "onto one CRS first (gdalwarp)")
    x_size = pixel_size or min(abs(g.transform[0]) for g in grids)
    y_size = pixel_size or min(abs(g.transform[4]) for g in grids)
    left = min(g.transform[2] for g in grids)
    top = max(g.transform[5] for g in grids)
    right = max(g.transform[2] + g.transform[0] * g.width for g in grids)
    bottom = min(g.transform[5] + g.transform[4] * g.height for g in grids)
    width, height = int(0.5 + (right - left) / x_size), int(0.5 + (top - bottom) / y_size)
    return width, height, (x_size, 0.0, left, 0.0, -y_size, top)


def stack_vrt(bands: list[StackedBand], pixel_size: float | None = None, kernel: str = "nearest") -> str:
    """The XML of a VRT stacking ``bands`` (in order) onto their :func:`stacked_grid` at ``pixel_size``."""
    width, height, transform = stacked_grid([b.grid for b in bands], pixel_size)
    dtype = GDAL_TYPES[str(np.result_type(*[np.dtype(b.grid.dtype) for b in bands]))]
    a, _, c, _, e, f = transform
    header = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
              f'<SRS dataAxisToSRSAxisMapping="1,2">{escape(bands[0].grid.crs)}</SRS>'
              f"<GeoTransform>{c!r}, {a!r}, 0.0, {f!r}, 0.0, {e!r}</GeoTransform>")
    body = "".join(_band_xml(number, band, dtype, transform, kernel) for number, band in enumerate(bands, 1))
    return header + body + "</VRTDataset>"


def _band_xml(number: int, band: StackedBand, dtype: str, transform: tuple[float, ...], kernel: str) -> str:
    """One ``VRTRasterBand`` of :func:`stack_vrt`: the band's facts and its source rectangle on the grid."""
    grid = band.grid
    nodata = band.nodata if band.nodata is not None else grid.nodata
    scale = band.scale if band.scale is not None else grid.scale
    offset = band.offset if band.offset is not None else grid.offset
    x_off = (grid.transform[2] - transform[2]) / transform[0]
    y_off = (grid.transform[5] - transform[5]) / transform[4]
    x_size = grid.width * abs(grid.transform[0]) / transform[0]
    y_size = grid.height * abs(grid.transform[4]) / abs(transform[4])
    facts = "" if nodata is None else f"<NoDataValue>{nodata!r}</NoDataValue>"
    facts += f"<Offset>{offset!r}</Offset><Scale>{scale!r}</Scale>" if (scale, offset) != (1.0, 0.0) else ""
    source = (f'<SourceFilename relativeToVRT="0">{escape(band.source)}</SourceFilename>'
              f"<SourceBand>{band.band}</SourceBand>"
              f'<SourceProperties RasterXSize="{grid.width}" RasterYSize="{grid.height}" '
              f'DataType="{GDAL_TYPES[grid.dtype]}" BlockXSize="{grid.block[0]}" BlockYSize="{grid.block[1]}"/>'
              f'<SrcRect xOff="0" yOff="0" xSize="{grid.width}" ySize="{grid.height}"/>'
              f'<DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" ySize="{y_size!r}"/>'
              + ("" if nodata is None else f"<NODATA>{nodata!r}</NODATA>"))
    return (f'<VRTRasterBand dataType="{dtype}" band="{number}">'
            f"<Description>{escape(band.description)}</Description>{facts}"
            f'<ComplexSource resampling="{kernel}">{source}</ComplexSource></VRTRasterBand>')
