"""The test STAC Items, made from the real sample data in ../shared/data, their assets COGs on the loopback S3.

Three layouts a STAC search hands the product:

- ``utm_multiband``: landsat_rgb/RGB.byte.tif as ONE 3-band COG asset ``image`` (EPSG:32618, 300 m, nodata 0);
- ``wgs84``: one Sentinel-2 landslide chip (EPSG:4326, 4 float64 bands R, G, B, NIR; georeferenced by its .tfw
  world file, which the COG carries inside) as one asset ``image`` whose eo:bands name the four;
- ``per_band``: RGB.byte.tif split into one single-band COG asset per band (``red``, ``green`` at "300 m",
  the file's 300.04 m grid; ``blue`` averaged to twice that, "600 m": the Sentinel-2 layout of bands at
  different resolutions). The bands are cut to 790 x 718 pixels first (one column less than the file) so the
  coarse grid (395 x 359) covers exactly the fine one, as Sentinel-2's 20 m and 10 m grids do.

Each :class:`SceneItem` carries the Item JSON (asset hrefs ``s3://scenes/stac/<item>/<file>``), the local
raster equivalent to it (the COG itself; for ``per_band`` a VRT made with ``gdalbuildvrt -separate -resolution
highest``, its bands described by their names) and the band names in that local raster's order.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers import SHARED_DATA

if TYPE_CHECKING:
    from tests.s3_fixtures import S3Server

STAC_VERSION = "1.1.0"
EXTENSIONS = ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
              "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
              "https://stac-extensions.github.io/projection/v2.0.0/schema.json"]
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
RGB = SHARED_DATA / "landsat_rgb" / "RGB.byte.tif"
CHIPS = SHARED_DATA / "s2_landslide_chips" / "images"
RGB_BANDS = (("red", "red"), ("green", "green"), ("blue", "blue"))
S2_BANDS = (*RGB_BANDS, ("nir", "nir"))
DATETIMES = {"utm_multiband": "2024-05-01T10:00:00Z", "wgs84": "2024-05-02T10:00:00Z",
             "per_band": "2024-05-03T10:00:00Z"}
UPDATED = "2024-05-04T00:00:00Z"
PER_BAND_WINDOW = (790, 718)  # columns, rows: even, so the 600 m band covers exactly the 300 m ones


@dataclass(frozen=True)
class SceneItem:
    """One test Item: its JSON, the local raster equal to it, its band names, its assets' local COGs."""

    name: str
    item: dict
    local: Path
    band_names: tuple[str, ...]
    asset_files: dict[str, Path] = field(default_factory=dict)


def cog(source: Path, out: Path, *options: str) -> Path:
    """``source`` written by gdal_translate as a DEFLATE COG at ``out`` (``options`` before the paths); ``out``."""
    subprocess.run(["gdal_translate", "-q", "-of", "COG", "-co", "COMPRESS=DEFLATE", "-co", "BLOCKSIZE=256",
                    *options, str(source), str(out)], check=True)
    return out


def asset_json(href: str, path: Path, bands: tuple[tuple[str, str], ...], title: str) -> dict:
    """A STAC asset for the COG at ``path`` served at ``href``: eo:bands, raster:bands and projection fields."""
    import rasterio

    with rasterio.open(path) as ds:
        assert ds.crs is not None and ds.count == len(bands), f"{path}: no CRS or not {len(bands)} bands"
        raster_bands = []
        for index in range(ds.count):
            band = {"data_type": ds.dtypes[index]}
            if ds.nodatavals[index] is not None:
                band["nodata"] = ds.nodatavals[index]
            if ds.crs.is_projected:
                band["spatial_resolution"] = ds.res[0]
            raster_bands.append(band)
        return {"href": href, "type": COG_TYPE, "title": title, "roles": ["data"],
                "eo:bands": [{"name": name, "common_name": common} for name, common in bands],
                "raster:bands": raster_bands, "proj:code": f"EPSG:{ds.crs.to_epsg()}",
                "proj:shape": [ds.height, ds.width], "proj:transform": list(ds.transform)[:6],
                "proj:bbox": list(ds.bounds)}


def item_json(item_id: str, assets: dict[str, dict], files: dict[str, Path], when: str | None = None) -> dict:
    """A STAC 1.1 Item ``item_id`` of ``assets`` (local COGs ``files``): bbox and geometry in WGS 84; its
    datetime ``when`` (default: the test Item's in :data:`DATETIMES`)."""
    import rasterio
    from rasterio.warp import transform_bounds

    boxes = []
    for path in files.values():
        with rasterio.open(path) as ds:
            boxes.append(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
    east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
    codes = {asset["proj:code"] for asset in assets.values()}
    properties = {"datetime": when or DATETIMES[item_id], "updated": UPDATED}
    if len(codes) == 1:
        properties["proj:code"] = codes.pop()
    return {"type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": list(EXTENSIONS), "id": item_id,
            "bbox": [west, south, east, north],
            "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                             [west, north], [west, south]]]},
            "properties": properties, "links": [], "assets": assets}


def _uploaded(s3: S3Server, name: str, files: dict[str, Path], bands: dict[str, tuple],
              titles: dict[str, str]) -> dict:
    """The Item ``name`` whose assets are ``files`` uploaded to the bucket under ``stac/<name>/``."""
    assets = {key: asset_json(s3.upload(path, f"stac/{name}/{path.name}"), path, bands[key], titles[key])
              for key, path in files.items()}
    return item_json(name, assets, files)


def utm_multiband(s3: S3Server, work: Path) -> SceneItem:
    """RGB.byte.tif as one 3-band COG asset ``image``."""
    path = cog(RGB, work / "utm_multiband.tif")
    item = _uploaded(s3, "utm_multiband", {"image": path}, {"image": RGB_BANDS}, {"image": "Landsat 7 RGB"})
    return SceneItem("utm_multiband", item, path, ("red", "green", "blue"), {"image": path})


def wgs84(s3: S3Server, work: Path) -> SceneItem:
    """The first Sentinel-2 landslide chip (R, G, B, NIR in EPSG:4326) as one 4-band COG asset ``image``."""
    import rasterio

    chip = sorted(CHIPS.glob("*.tif"))[0]
    path = cog(chip, work / "wgs84.tif")
    with rasterio.open(chip) as source, rasterio.open(path) as written:
        assert written.crs == source.crs and written.transform == source.transform, "the COG lost the .tfw grid"
    item = _uploaded(s3, "wgs84", {"image": path}, {"image": S2_BANDS}, {"image": f"Sentinel-2 chip {chip.name}"})
    return SceneItem("wgs84", item, path, ("red", "green", "blue", "nir"), {"image": path})


def per_band(s3: S3Server, work: Path) -> SceneItem:
    """RGB.byte.tif as one COG asset per band, ``blue`` at twice the pixel size; locally a VRT of the three."""
    cols, rows = PER_BAND_WINDOW
    window = ["-srcwin", "0", "0", str(cols), str(rows)]
    files = {"red": cog(RGB, work / "per_band_red.tif", "-b", "1", *window),
             "green": cog(RGB, work / "per_band_green.tif", "-b", "2", *window),
             "blue": cog(RGB, work / "per_band_blue_600m.tif", "-b", "3", *window, "-outsize", str(cols // 2),
                         str(rows // 2), "-r", "average")}
    bands = {key: ((key, key),) for key in files}
    item = _uploaded(s3, "per_band", files, bands, {key: f"Landsat 7 {key}" for key in files})
    return SceneItem("per_band", item, band_vrt(work / "per_band.vrt", files), tuple(files), files)


def band_vrt(out: Path, files: dict[str, Path]) -> Path:
    """``gdalbuildvrt -separate -resolution highest`` of ``files`` (one band each), bands described by their
    keys; ``out``."""
    import rasterio

    subprocess.run(["gdalbuildvrt", "-q", "-separate", "-resolution", "highest", str(out),
                    *(str(path) for path in files.values())], check=True)
    with rasterio.open(out, "r+") as vrt:
        for index, name in enumerate(files, start=1):
            vrt.set_band_description(index, name)
    return out


def scene_items(s3: S3Server, work: Path) -> dict[str, SceneItem]:
    """The three test Items by name (``utm_multiband``, ``wgs84``, ``per_band``), assets uploaded to ``s3``."""
    return {scene.name: scene for scene in (utm_multiband(s3, work), wgs84(s3, work), per_band(s3, work))}
