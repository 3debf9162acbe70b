"""A synthetic data set on disk: Landslide4Sense-style HDF5 chips and georeferenced scenes.

Chip N depends only on (seed, N) and scene N only on (seed, N), not on how many are
written, so a larger data set extends a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from geoseg_batch.data.synthetic.geotiff import write_scene
from geoseg_batch.data.synthetic.layout import require_int, scene_layout
from geoseg_batch.data.synthetic.render import make_chip

_CHIP_STREAM, _SCENE_STREAM = 101, 102


@dataclass(frozen=True)
class SynthResult:
    """Where :func:`synth` wrote its data."""

    chips_dir: Path | None
    scenes: tuple[Path, ...]
    truths: tuple[Path, ...]


def _derived_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


def write_l4s_chips(out_dir: Path, chips: int, bands: int = 14, size: int = 128, seed: int = 0) -> Path:
    """Landslide4Sense layout: ``out_dir/img/image_N.h5`` (dataset ``img``, float32
    (size, size, bands)) and ``out_dir/mask/mask_N.h5`` (dataset ``mask``, uint8 (size, size)),
    N = 1..chips. Chip N depends only on (seed, N), not on ``chips``. Returns ``out_dir``.
    """
    chips = require_int("chips", chips, 0, "use 0 for no chips")
    bands = require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    size = require_int("size", size, 8, "chips are square, at least 8 pixels on a side")
    seed = require_int("seed", seed, 0, "use a non-negative integer seed")
    out_dir = Path(out_dir)
    (out_dir / "img").mkdir(parents=True, exist_ok=True)
    (out_dir / "mask").mkdir(parents=True, exist_ok=True)
    for n in range(1, chips + 1):
        image, mask = make_chip(np.random.default_rng([seed, _CHIP_STREAM, n]), size, bands)
        with h5py.File(out_dir / "img" / f"image_{n}.h5", "w") as f:
            f.create_dataset("img", data=image)
        with h5py.File(out_dir / "mask" / f"mask_{n}.h5", "w") as f:
            f.create_dataset("mask", data=mask)
    return out_dir



def synth(
    out: Path | str,
    chips: int = 200,
    bands: int = 14,
    size: int = 128,
    scenes: int = 2,
    seed: int = 0,
    scene_height: int = 512,
    scene_width: int = 640,
) -> SynthResult:
    """Write ``out/chips`` (Landslide4Sense layout) and ``out/scenes/scene_N.tif`` with
    ``scene_N_truth.tif`` (N = 1..scenes).

    Odd scenes are in EPSG:32633 (UTM 33N, 10 m pixels), even ones in EPSG:4326
    (0.0001 deg pixels), so consumers meet both a projected and a geographic CRS.
    """
    chips = require_int("chips", chips, 0, "use 0 for no chips")
    bands = require_int("bands", bands, 1, "use 1..N bands (14 for Landslide4Sense)")
    size = require_int("size", size, 8, "chips are square, at least 8 pixels on a side")
    scenes = require_int("scenes", scenes, 0, "use 0 for no scenes")
    seed = require_int("seed", seed, 0, "use a non-negative integer seed")
    scene_height = require_int("scene_height", scene_height, 8, "scenes are at least 8x8 pixels")
    scene_width = require_int("scene_width", scene_width, 8, "scenes are at least 8x8 pixels")
    out = Path(out)
    chips_dir = write_l4s_chips(out / "chips", chips, bands, size, seed) if chips else None
    scene_paths: list[Path] = []
    truth_paths: list[Path] = []
    for n in range(1, scenes + 1):
        layout = scene_layout(_derived_seed(seed, _SCENE_STREAM, n), scene_height, scene_width, bands)
        scene_path = out / "scenes" / f"scene_{n}.tif"
        truth_path = out / "scenes" / f"scene_{n}_truth.tif"
        write_scene(scene_path, truth_path, layout, "EPSG:32633" if n % 2 else "EPSG:4326")
        scene_paths.append(scene_path)
        truth_paths.append(truth_path)
    return SynthResult(chips_dir=chips_dir, scenes=tuple(scene_paths), truths=tuple(truth_paths))
