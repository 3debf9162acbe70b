"""A STAC Item as a scene: its assets' bands matched to the bundle's, stacked lazily onto one grid by a GDAL VRT.

An :class:`ItemScene` is what predict opens for an Item found by :mod:`geoseg_batch.stac.catalog`:
the VRT's XML (GDAL opens the XML text itself as the dataset name, so it travels to workers
that share no disk), whose bands are the bundle's bands in its order. Each VRT band reads
one band of one asset where it lies (``/vsis3/bucket/key``, ``/vsicurl/https://...``):
nothing is downloaded whole, and tiles keep their one windowed read per task.

Bands are matched by the bundle's band names: an explicit ``assets:`` mapping first (band
name -> asset key), then the assets' band lists (``eo:bands`` of STAC 1.0, ``bands`` of 1.1)
by name, then by common name, then an asset whose key is the band's name. Both Item shapes
work: one multi-band asset, and one asset per band at different resolutions (Sentinel-2
L2A's 10, 20 and 60 m): the grid is the bundle's training resolution where it records one
(a metric CRS), else the finest asset's; coarser bands are read through the VRT's source
rectangles (nearest, or the job's kernel with ``resample``). Scale, offset and nodata come
from the Item's ``raster:bands`` where present, else from the files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from geoseg_batch.errors import CatalogError, DataError
from geoseg_batch.geo.vrt import FileGrid, StackedBand, file_grid, stack_vrt
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import gdal_path, is_url, protocol
from geoseg_batch.model.bundle import BundleMetadata


@dataclass(frozen=True)
class BandSource:
    """One bundle band as one band of one asset."""

    name: str  # the bundle's band name
    asset: str  # the asset's key
    href: str
    band: int  # 1-based, within the asset's file
    nodata: float | None = None
    scale: float | None = None
    offset: float | None = None


@dataclass(frozen=True)
class ItemScene:
    """An Item ready to open as a scene: where it is named from, its outputs' stem, the VRT GDAL opens, and the
    identity its outputs are keyed by (its id, ``updated`` and the assets' ETags)."""

    item: dict[str, Any]
    location: str  # the Item's self href (or CATALOG#ID): what manifests name as the scene
    stem: str
    dataset: str  # the VRT's XML
    checksum: str


def item_scene(item: dict[str, Any], metadata: BundleMetadata, assets: dict[str, str] | None,
               cloud: CloudSettings, catalog: str, kernel: str = "nearest") -> ItemScene:
    """The scene of ``item`` for the bundle ``metadata``; ``assets``: the job's band-to-asset mapping;
    ``kernel``: how bands on a coarser grid are resampled.

    Raises CatalogError naming the bands found (and the mapping that would fix it) when a band is missing,
    and for assets that cannot be read or placed on one grid."""
    sources = band_sources(item, metadata.band_names, assets or {})
    if any(is_url(s.href) for s in sources):
        cloud.apply()
    grids = {href: _grid(href, item["id"]) for href in dict.fromkeys(s.href for s in sources)}
    bands = [StackedBand(s.name, gdal_path(s.href), s.band, grids[s.href], s.nodata, s.scale, s.offset)
             for s in sources]
    try:
        dataset = stack_vrt(bands, _pixel_size(metadata, list(grids.values())), kernel)
    except DataError as exc:
        raise CatalogError(f"stac: Item {item['id']!r}: {exc}") from None
    return ItemScene(item, _location(item, catalog), scene_stem(item["id"]), dataset,
                     item_checksum(item, sources, cloud))


def _pixel_size(metadata: BundleMetadata, grids: list[FileGrid]) -> float | None:
    """The stacked grid's pixel size: the bundle's training resolution when it records one and the assets' CRS
    is in metres; None (the finest asset's) otherwise."""
    from rasterio.crs import CRS

    if metadata.resolution_m is None:
        return None
    crs = CRS.from_wkt(grids[0].crs)
    return metadata.resolution_m if crs.is_projected and crs.linear_units in ("metre", "meter", "m") else None


def item_checksum(item: dict[str, Any], sources: list[BandSource], cloud: CloudSettings) -> str:
    """``"stac:<sha256>"`` of what the Item's outputs are made from: its id and collection, ``updated``, and each
    asset read (its href and its identity: the store's ETag, a local file's SHA-256; an HTTP asset: its href and
    the Item's ``updated``)."""
    from geoseg_batch.io.publish import checksums

    hrefs = list(dict.fromkeys(s.href for s in sources))
    identities = checksums([h for h in hrefs if protocol(h) not in ("http", "https")], cloud)
    payload = {"id": item["id"], "collection": item.get("collection"),
               "updated": (item.get("properties") or {}).get("updated"),
               "assets": {h: identities.get(h, "href") for h in hrefs},
               "bands": [[s.name, s.asset, s.band, s.nodata, s.scale, s.offset] for s in sources]}
    return "stac:" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _grid(href: str, item_id: str) -> FileGrid:
    """The :class:`~geoseg_batch.geo.vrt.FileGrid` of asset ``href`` (its header: a few ranged reads of a COG)."""
    import rasterio

    try:
        return file_grid(gdal_path(href))
    except DataError as exc:
        raise CatalogError(f"stac: asset of Item {item_id!r}: {exc}") from None
    except rasterio.errors.RasterioIOError as exc:
        raise CatalogError(f"stac: asset {href} of Item {item_id!r} cannot be read ({str(exc).rstrip('.')}); "
                           "check that it exists and the storage settings (--endpoint-url, credentials)") from None


def scene_stem(item_id: str) -> str:
    """The outputs' stem of Item ``item_id``: the id, with characters file names cannot hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", item_id)


def _location(item: dict[str, Any], catalog: str) -> str:
    """The Item's self href, else ``CATALOG#ID``."""
    hrefs = [link.get("href") for link in item.get("links") or [] if link.get("rel") == "self"]
    return str(hrefs[0]) if hrefs and hrefs[0] else f"{catalog}#{item['id']}"


def asset_bands(asset: dict[str, Any]) -> list[dict[str, Any]]:
    """The asset's bands as ``[{"name", "common_name", "nodata", "scale", "offset"}, ...]`` (missing keys: None),
    from STAC 1.0's ``eo:bands`` + ``raster:bands`` or STAC 1.1's ``bands``; [] when it lists none."""
    eo, raster = asset.get("eo:bands") or [], asset.get("raster:bands") or []
    modern = asset.get("bands") or []
    count = max(len(eo), len(raster), len(modern))
    bands = []
    for n in range(count):
        e = eo[n] if n < len(eo) else {}
        r = raster[n] if n < len(raster) else {}
        m = modern[n] if n < len(modern) else {}
        bands.append({"name": e.get("name") or m.get("name"),
                      "common_name": e.get("common_name") or m.get("eo:common_name"),
                      "nodata": r.get("nodata", m.get("nodata")),
                      "scale": r.get("scale", m.get("raster:scale")),
                      "offset": r.get("offset", m.get("raster:offset"))})
    return bands


def band_sources(item: dict[str, Any], band_names: tuple[str, ...], mapping: dict[str, str]) -> list[BandSource]:
    """One :class:`BandSource` per bundle band, in the bundle's order (see the module's matching rules)."""
    unknown = sorted(set(mapping) - set(band_names))
    if unknown:
        raise CatalogError(f"stac.assets maps {unknown}, which are not bands of the model "
                           f"({', '.join(band_names)}); map the model's band names to asset keys")
    sources, missing = [], []
    for name in band_names:
        found = _mapped(item, name, mapping[name]) if name in mapping else _matched(item, name)
        if found is None:
            missing.append(name)
        else:
            sources.append(found)
    if missing:
        raise CatalogError(_missing_line(item, band_names, missing))
    return sources


def _mapped(item: dict[str, Any], name: str, key: str) -> BandSource:
    """Band ``name`` from asset ``key`` (the job's mapping): its band of that name, or its only band."""
    asset = (item.get("assets") or {}).get(key)
    if asset is None:
        raise CatalogError(f"stac.assets maps {name} to asset {key!r}, which Item {item['id']!r} does not have "
                           f"(assets: {', '.join(item.get('assets') or {})}); fix the mapping")
    bands = asset_bands(asset)
    for number, band in enumerate(bands, 1):
        if name in (band["name"], band["common_name"]):
            return _source(name, key, asset, number, band)
    if len(bands) <= 1:
        return _source(name, key, asset, 1, bands[0] if bands else {})
    raise CatalogError(f"stac.assets maps {name} to asset {key!r} of Item {item['id']!r}, which has {len(bands)} "
                       f"bands and none named {name!r}; map a single-band asset, or name the band in the Item")


def _matched(item: dict[str, Any], name: str) -> BandSource | None:
    """Band ``name`` found in the Item's assets by band name, then common name, then asset key; None if absent."""
    assets = item.get("assets") or {}
    for field in ("name", "common_name"):
        for key, asset in assets.items():
            for number, band in enumerate(asset_bands(asset), 1):
                if str(band[field] or "").lower() == name.lower():
                    return _source(name, key, asset, number, band)
    asset = assets.get(name)
    if asset is not None and len(asset_bands(asset)) <= 1:
        return _source(name, name, asset, 1, (asset_bands(asset) or [{}])[0])
    return None


def _source(name: str, key: str, asset: dict[str, Any], number: int, band: dict[str, Any]) -> BandSource:
    """A BandSource of band ``number`` of ``asset``, with the Item's raster:bands facts."""
    def number_or_none(value: Any) -> float | None:
        return None if value is None else float(value)

    return BandSource(name, key, str(asset["href"]), number, number_or_none(band.get("nodata")),
                      number_or_none(band.get("scale")), number_or_none(band.get("offset")))


def _missing_line(item: dict[str, Any], band_names: tuple[str, ...], missing: list[str]) -> str:
    """The one line for an Item lacking bands: the bands it has, and an ``assets:`` mapping to fix it."""
    found = [f"{key}:{band['name'] or band['common_name'] or number}" if len(asset_bands(asset)) > 1 else key
             for key, asset in (item.get("assets") or {}).items()
             for number, band in enumerate(asset_bands(asset) or [{"name": None, "common_name": None}], 1)]
    example = ",".join(f"{name}=ASSET" for name in missing)
    return (f"stac: Item {item['id']!r} has no band named {', '.join(missing)} (the model needs "
            f"{', '.join(band_names)}; the Item's assets and bands: {', '.join(found) or 'none'}); map them "
            f"with stac.assets, e.g. --assets {example} (YAML: assets: {{{', '.join(f'{m}: ASSET' for m in missing)}}})")
