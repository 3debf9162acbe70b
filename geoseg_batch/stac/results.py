"""STAC Items of the results: one per predicted scene, one for a mosaic.

An Item is located on its grid (an odc-geo ``GeoBox``): geometry and bbox in WGS 84, and the
projection extension (``proj:code`` or ``proj:wkt2``, ``proj:shape``, ``proj:transform``,
``proj:bbox``) in the grid's own CRS. Its assets are the files of the output: the zarr store,
the mask and probability COGs (raster extension: uint8 classes with nodata 255; probabilities
uint8 0..250 with scale 1/250, or float32 with NaN nodata, as :mod:`geoseg_batch.io.cog`
writes them; the mask also carries the classification extension's classes), the polygons'
GeoPackage. Processing facts (processing extension, and ``geoseg:*`` properties) say what made
it. Hrefs are absolute here (the published locations); :mod:`geoseg_batch.stac.collection`
writes them relative to the static collection.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geoseg_batch.version import __version__

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
ZARR_TYPE = "application/vnd+zarr"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOPACKAGE_TYPE = "application/geopackage+sqlite3"
MASK_NODATA = 255  # as io/zarr_store.py writes them (not imported: that module imports the geo grid)
PROBABILITY_SCALE = 250
ASSET_ROLES = {"zarr": ["data"], "mask": ["data", "classification"], "probabilities": ["data"],
               "polygons": ["data"]}
ASSET_TYPES = {"zarr": ZARR_TYPE, "mask": COG_TYPE, "probabilities": COG_TYPE, "polygons": GEOPACKAGE_TYPE}
ASSET_TITLES = {"zarr": "mask and probabilities (zarr)", "mask": "class mask (COG)",
                "probabilities": "class probabilities (COG)", "polygons": "regions of each class (GeoPackage)"}
MANIFEST_KEYS = {"zarr": "zarr", "mask_cog": "mask", "probability_cog": "probabilities", "polygons": "polygons"}
"""{manifest entry key: asset key}."""


@dataclass(frozen=True)
class Provenance:
    """What made the results: the model (its checksum, classes, its MLM Item), the settings that shape the
    values (stitch mode, precision, the probabilities' encoding) and when."""

    classes: tuple[str, ...]
    model_checksum: str | None
    created: dt.datetime
    float_output: bool = False
    stitch: str | None = None
    precision: str | None = None
    model_item: str | None = None  # href of the bundle's MLM Item
    model_name: str | None = None  # its mlm:name

    def properties(self) -> dict[str, Any]:
        """The processing extension's fields and the geoseg facts, as Item properties."""
        facts = {"processing:software": {"geoseg-batch": __version__}, "processing:level": "L4",
                 "processing:datetime": iso(self.created),
                 "geoseg:model_checksum": self.model_checksum, "geoseg:stitch": self.stitch,
                 "geoseg:precision": self.precision,
                 "geoseg:probabilities": "float32" if self.float_output else f"uint8/{PROBABILITY_SCALE}"}
        return {key: value for key, value in facts.items() if value is not None}


def iso(moment: dt.datetime) -> str:
    """``moment`` as an RFC 3339 string in UTC (``...Z``)."""
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def scene_item(stem: str, geobox: Any, assets: Mapping[str, str], provenance: Provenance,
               source_item: Mapping[str, Any] | None, scene: str, key: str = "") -> Any:
    """The ``pystac.Item`` of a predicted scene: id ``stem``, on ``geobox``, with ``assets`` ({asset key: href},
    see :data:`ASSET_TYPES`); a ``derived_from`` link to ``source_item`` (the input STAC Item's JSON, where the
    scene came from STAC: its self link) and its time, else the time its prediction was made; ``scene`` (the
    input's location) and ``key`` (the content key its outputs were made from) recorded as ``geoseg:scene``
    and ``geoseg:key``."""
    import pystac

    start, end, moment = _source_times(source_item, provenance.created)
    item = _new_item(stem, {"geoseg:scene": scene, "geoseg:key": key}, provenance, moment, start, end)
    _locate(item, geobox)
    _add_assets(item, assets, provenance, _resolution(geobox))
    source = _self_href(source_item)
    if source is not None:
        item.add_link(pystac.Link("derived_from", source, pystac.MediaType.GEOJSON, "the input scene's Item"))
    _link_model(item, provenance)
    return item


def mosaic_item(item_id: str, geobox: Any, assets: Mapping[str, str], provenance: Provenance,
                sources: Sequence[Mapping[str, Any]], scenes: Sequence[str]) -> Any:
    """The ``pystac.Item`` of a mosaic on ``geobox``: ``derived_from`` links to the predicted scenes' Items
    ``sources`` (their JSON, with their hrefs as ``"href"``), its time range theirs (else the run's time);
    ``scenes``: the prediction stores it was made from (``geoseg:sources``)."""
    import pystac

    times = [_source_times(source, provenance.created) for source in sources]
    starts = [t[0] or t[2] for t in times if (t[0] or t[2]) is not None]
    ends = [t[1] or t[2] for t in times if (t[1] or t[2]) is not None]
    start, end = (min(starts), max(ends)) if starts and ends else (provenance.created, provenance.created)
    item = _new_item(item_id, {"geoseg:sources": list(scenes)}, provenance, None, start, end)
    _locate(item, geobox)
    _add_assets(item, assets, provenance, _resolution(geobox))
    for source in sources:
        item.add_link(pystac.Link("derived_from", source["href"], pystac.MediaType.GEOJSON,
                                  f"predicted scene {source.get('id')}"))
    _link_model(item, provenance)
    return item


def manifest_assets(entry: Mapping[str, Any]) -> dict[str, str]:
    """{asset key: href} of a manifest output entry ({"zarr": ..., "mask_cog": ..., ...})."""
    return {MANIFEST_KEYS[key]: str(value) for key, value in entry.items() if key in MANIFEST_KEYS}


def _new_item(item_id: str, properties: dict[str, Any], provenance: Provenance, moment: dt.datetime | None,
              start: dt.datetime | None, end: dt.datetime | None) -> Any:
    """A ``pystac.Item`` without geometry yet, with ``properties``, the processing facts and its times."""
    import pystac

    item = pystac.Item(item_id, None, None, moment, {**properties, **provenance.properties()},
                       start_datetime=start, end_datetime=end, stac_extensions=[PROCESSING_SCHEMA])
    item.common_metadata.created = provenance.created
    return item


def _source_times(source: Mapping[str, Any] | None, fallback: dt.datetime
                  ) -> tuple[dt.datetime | None, dt.datetime | None, dt.datetime | None]:
    """(start, end, datetime) of a source Item's JSON; (None, None, ``fallback``) without one (or without times)."""
    from pystac.utils import str_to_datetime

    properties = (source or {}).get("properties", {})
    parsed = {key: str_to_datetime(properties[key]) if properties.get(key) else None
              for key in ("start_datetime", "end_datetime", "datetime")}
    if parsed["datetime"] is None and (parsed["start_datetime"] is None or parsed["end_datetime"] is None):
        return None, None, fallback
    return parsed["start_datetime"], parsed["end_datetime"], parsed["datetime"]


def _self_href(source: Mapping[str, Any] | None) -> str | None:
    """The href of a STAC Item's JSON ``self`` link (None: no Item, or no such link)."""
    links = (source or {}).get("links", [])
    return next((link["href"] for link in links if link.get("rel") == "self" and link.get("href")), None)


def _locate(item: Any, geobox: Any) -> None:
    """Give ``item`` the footprint of ``geobox`` (WGS 84 geometry and bbox) and its projection fields."""
    from pystac.extensions.projection import ProjectionExtension

    footprint = geobox.footprint("epsg:4326", npoints=8)
    item.geometry = footprint.json
    item.bbox = [float(v) for v in footprint.boundingbox]
    epsg = geobox.crs.epsg
    rows, cols = geobox.shape
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=f"EPSG:{epsg}" if epsg is not None else None, wkt2=None if epsg is not None else geobox.crs.wkt,
        shape=[int(rows), int(cols)], transform=[float(v) for v in tuple(geobox.affine)[:6]],
        bbox=[float(v) for v in geobox.extent.boundingbox])


def _resolution(geobox: Any) -> float:
    """The grid's pixel size (its x step), in its CRS' units."""
    return abs(float(geobox.affine.a))


def _add_assets(item: Any, assets: Mapping[str, str], provenance: Provenance, resolution: float) -> None:
    """Add ``assets`` to ``item``, the COGs with their raster bands, the mask with its classes."""
    import pystac
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.raster import RasterExtension

    for key, href in assets.items():
        item.add_asset(key, pystac.Asset(href, ASSET_TITLES[key], media_type=ASSET_TYPES[key],
                                         roles=ASSET_ROLES[key]))
        if key in ("mask", "probabilities"):
            RasterExtension.ext(item.assets[key], add_if_missing=True).apply(
                _raster_bands(key, provenance, resolution))
        if key == "mask":
            ClassificationExtension.ext(item.assets[key], add_if_missing=True).apply(
                classes=class_objects(provenance.classes, with_nodata=True))


def _raster_bands(key: str, provenance: Provenance, resolution: float) -> list[Any]:
    """The raster bands of the mask or probability COG."""
    from pystac.extensions.raster import DataType, RasterBand

    if key == "mask":
        return [RasterBand.create(nodata=MASK_NODATA, data_type=DataType.UINT8, spatial_resolution=resolution)]
    count = 1 if len(provenance.classes) == 2 else len(provenance.classes)
    if provenance.float_output:
        return [RasterBand.create(nodata="nan", data_type=DataType.FLOAT32, spatial_resolution=resolution)
                for _ in range(count)]
    return [RasterBand.create(nodata=MASK_NODATA, data_type=DataType.UINT8, spatial_resolution=resolution,
                              scale=1 / PROBABILITY_SCALE, offset=0.0) for _ in range(count)]


def class_objects(classes: Sequence[str], with_nodata: bool = False) -> list[Any]:
    """The classification extension's classes of the mask's values (0, 1, ...: the bundle's ``classes``); with
    ``with_nodata`` also its nodata value."""
    from pystac.extensions.classification import Classification

    objects = [Classification.create(value=value, name=_class_name(name), description=name)
               for value, name in enumerate(classes)]
    if with_nodata:
        objects.append(Classification.create(value=MASK_NODATA, name="nodata", description="no data",
                                             nodata=True))
    return objects


def _class_name(name: str) -> str:
    """A class name as the classification extension allows it (letters, digits, ``-`` and ``_``)."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or "class"


def _link_model(item: Any, provenance: Provenance) -> None:
    """Link ``item`` to the MLM Item of the model that made it (``derived_from``, as the MLM extension's best
    practices have it), when there is one."""
    import pystac

    if provenance.model_item is None:
        return
    link = pystac.Link("derived_from", provenance.model_item, pystac.MediaType.GEOJSON, "the model (MLM Item)",
                       extra_fields={"mlm:name": provenance.model_name, "processing:level": "L4"})
    item.add_link(link)
