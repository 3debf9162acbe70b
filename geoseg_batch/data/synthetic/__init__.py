"""Synthetic landslide data: learnable, but not by one cue alone.

A synthetic scene is a set of smooth fields on a global pixel grid plus a list of
objects drawn once from the seed:

* **Land cover** -- a vegetation fraction ``v`` in [0, 1]. Each spectral band is the
  linear mix ``v * vegetation + (1 - v) * soil`` of two Sentinel-2-like spectra
  (vegetation dark in the visible, bright in the NIR; soil brighter in the visible
  and SWIR) plus per-pixel gaussian texture.
* **Terrain** (4 or more bands) -- the last two bands are ``slope`` (degrees,
  0..60) and ``DEM`` (metres, ~200..3000), both smooth, spanning flat to steep
  ground within a chip. Slope is its own smooth field rather than the DEM's
  gradient, so its distribution (how much ground is flat, how much steep) is set
  directly; the DEM follows it loosely (steep ground sits high).
* **Landslides** (mask 1) -- irregular elongated blobs, placed preferentially on
  steep ground, clustered by a regional "trigger" field, with fresh bare soil/rock
  inside (``v`` ~ 0..0.1, brighter than ordinary soil) and slope forced steep.
* **Distractors** (mask 0, 4 or more bands) -- bare-soil patches of the same size
  and spectrum (fields, river bars) on flat ground.

So *bare and steep* is a landslide, while bare-only (distractor) or steep-only
(vegetated hillside) is not: a rule on one cue is clearly worse than a rule on
both. Positives are a few percent of pixels and some chips have none, as in
Landslide4Sense. With fewer than 4 bands there is no terrain and no distractor:
landslides are the bright bare blobs.

Every field is a pure function of global pixel coordinates (value noise on seeded
coarse lattices; texture noise from RNGs seeded per fixed 64x64 global tile), and
objects are a global list, so any window ``(row0, col0, rows, cols)`` renders
identically however a scene is cut. That lets :func:`write_scene` stream scenes far
larger than memory block by block, and makes a chip simply a one-window scene.

Modules: :mod:`.noise` (value-noise fields), :mod:`.layout` (a scene's grid, fields and
objects), :mod:`.render` (pixels of any window; chips), :mod:`.geotiff` (scenes as
GeoTIFFs) and :mod:`.dataset` (a whole data set on disk: :func:`synth`).
"""

from geoseg_batch.data.synthetic.dataset import SynthResult, synth, write_l4s_chips
from geoseg_batch.data.synthetic.geotiff import SYNTHETIC_PIXEL_M, nodata_collar, scene_transform, write_scene
from geoseg_batch.data.synthetic.layout import Blob, SceneLayout, scene_layout
from geoseg_batch.data.synthetic.render import make_chip, render_window, spectra

__all__ = [
    "SYNTHETIC_PIXEL_M",
    "Blob",
    "SceneLayout",
    "SynthResult",
    "make_chip",
    "nodata_collar",
    "render_window",
    "scene_layout",
    "scene_transform",
    "spectra",
    "synth",
    "write_l4s_chips",
    "write_scene",
]
