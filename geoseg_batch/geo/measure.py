"""Metres in a CRS: how long a projected CRS's unit is, and the geodesic on a geographic CRS's ellipsoid.

Predict measures in metres twice: resampling a scene to the bundle's ground sampling
distance (:func:`geoseg_batch.geo.scene.resampled_grid`) and the areas of mask regions
(:mod:`geoseg_batch.geo.polygons`). Both take the CRS as given (anything pyproj reads).
"""

from __future__ import annotations

from typing import Any


def metres_per_unit(crs: Any) -> float:
    """Metres in one unit of a projected CRS's first axis (1.0 when the CRS does not say)."""
    from pyproj import CRS

    axes = CRS.from_user_input(crs).axis_info
    return float(axes[0].unit_conversion_factor) if axes else 1.0


def ellipsoid_geod(crs: Any) -> Any:
    """A pyproj ``Geod`` on the CRS's ellipsoid (WGS84 when it has none), for distances and areas in metres."""
    from pyproj import CRS, Geod

    ellipsoid = CRS.from_user_input(crs).ellipsoid
    if ellipsoid is None:
        return Geod(ellps="WGS84")
    return Geod(a=ellipsoid.semi_major_metre, b=ellipsoid.semi_minor_metre)
