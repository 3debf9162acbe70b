"""Band names: the Landslide4Sense defaults and names for any band count.

Landslide4Sense patches carry 14 bands: Sentinel-2 B1..B12 without B8A, then ALOS
PALSAR slope and DEM. Other band counts get generic names ``b1..bN``; the synthetic
generator keeps ``slope`` and ``DEM`` as the last two bands whenever it has 4 or more.
"""

from __future__ import annotations

L4S_BANDS: tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "DEM",
)


def default_band_names(count: int) -> tuple[str, ...]:
    """Band names for ``count`` bands: Landslide4Sense's for 14, else ``b1..bN`` (slope, DEM last if >= 4)."""
    if count < 1:
        raise ValueError(f"band count must be >= 1, got {count}")
    if count == len(L4S_BANDS):
        return L4S_BANDS
    if count >= 4:
        return tuple(f"b{i + 1}" for i in range(count - 2)) + ("slope", "DEM")
    return tuple(f"b{i + 1}" for i in range(count))
