"""The Landslide4Sense layout: one HDF5 file per chip, images and masks paired by number.

    DIR/img/image_N.h5   dataset "img",  (rows, cols, bands) float
    DIR/mask/mask_N.h5   dataset "mask", (rows, cols) integer classes

:func:`scan_l4s` validates the whole directory from file headers (pairing, keys, shapes,
band counts) without reading pixels; :func:`read_l4s_pair` reads one chip and checks its
values (NaN/inf, non-integer classes). Every problem is a :class:`DataError` naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg_batch.data.hdf5 import open_hdf5, require
from geoseg_batch.errors import DataError, MissingInputError

IMAGE_KEY = "img"
MASK_KEY = "mask"
_IMAGE_NAME = re.compile(r"^image_(\d+)\.h5$")
_MASK_NAME = re.compile(r"^mask_(\d+)\.h5$")


@dataclass(frozen=True)
class L4SPair:
    """One chip: its id (``image_N``) and the two files."""

    chip_id: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class L4SIndex:
    """A validated Landslide4Sense directory."""

    root: Path
    pairs: tuple[L4SPair, ...]
    chip_shape: tuple[int, int]  # (rows, cols)
    bands: int


def is_l4s_dir(path: Path) -> bool:
    """True when ``path`` looks like a Landslide4Sense directory (has img/ or mask/)."""
    return path.is_dir() and ((path / "img").is_dir() or (path / "mask").is_dir())


def _numbered(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    found = {}
    for entry in folder.iterdir():
        match = pattern.match(entry.name)
        if match:
            found[int(match.group(1))] = entry
    return found


def _dataset_shape(path: Path, key: str) -> tuple[int, ...]:
    with open_hdf5(path) as handle:
        return tuple(require(handle, key, path, f"Landslide4Sense files keep their array under '{key}'").shape)


def scan_l4s(root: Path | str) -> L4SIndex:
    """Validate a Landslide4Sense directory from its file headers; raise DataError on the first problem."""
    root = Path(root)
    if not root.exists():
        raise MissingInputError(f"{root}: no such directory; expected a Landslide4Sense layout (img/, mask/)")
    images = _numbered(root / "img", _IMAGE_NAME)
    masks = _numbered(root / "mask", _MASK_NAME)
    if not images and not masks:
        raise DataError(
            f"{root}: empty directory: no img/image_N.h5 or mask/mask_N.h5 files found; "
            "expected the Landslide4Sense layout (or a directory of shards with index.json)"
        )
    for number in sorted(set(images) - set(masks)):
        raise DataError(f"{images[number]}: unpaired image: expected its mask at {root / 'mask' / f'mask_{number}.h5'}")
    for number in sorted(set(masks) - set(images)):
        raise DataError(f"{masks[number]}: unpaired mask: expected its image at {root / 'img' / f'image_{number}.h5'}")

    pairs, chip_shape, bands, first = [], None, None, None
    for number in sorted(images):
        image_shape = _dataset_shape(images[number], IMAGE_KEY)
        mask_shape = _dataset_shape(masks[number], MASK_KEY)
        if len(image_shape) != 3:
            raise DataError(f"{images[number]}: image has shape {image_shape}; expected (rows, cols, bands)")
        if mask_shape[:2] != image_shape[:2] or len(mask_shape) not in (2, 3) or (
            len(mask_shape) == 3 and mask_shape[2] != 1
        ):
            raise DataError(
                f"{masks[number]}: mask shape {mask_shape} does not match image shape {image_shape} "
                f"of {images[number]}; expected ({image_shape[0]}, {image_shape[1]})"
            )
        if bands is None:
            chip_shape, bands, first = image_shape[:2], image_shape[2], images[number]
        elif image_shape[2] != bands:
            raise DataError(
                f"{images[number]}: {image_shape[2]} bands, but {first} has {bands}; "
                "every image must have the same bands"
            )
        elif image_shape[:2] != chip_shape:
            raise DataError(
                f"{images[number]}: chip shape {image_shape[:2]} differs from {chip_shape} of {first}; "
                "resize the chips to one size before packing"
            )
        pairs.append(L4SPair(f"image_{number}", images[number], masks[number]))
    return L4SIndex(root=root, pairs=tuple(pairs), chip_shape=chip_shape, bands=bands)


def checked_image(image: np.ndarray, source: Path, fill_nan: float | None) -> np.ndarray:
    """``image`` as float32 with NaN/inf rejected, or replaced by ``fill_nan`` when given."""
    image = np.asarray(image, dtype=np.float32)
    bad = ~np.isfinite(image)
    count = int(bad.sum())
    if count:
        if fill_nan is None:
            raise DataError(
                f"{source}: {count} NaN/inf values; clean the data or pass --fill-nan V to replace them"
            )
        image = np.where(bad, np.float32(fill_nan), image)
    return image


def checked_mask(mask: np.ndarray, source: Path) -> np.ndarray:
    """``mask`` as uint8 (rows, cols) class ids; NaN, negative or non-integer values are rejected."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.dtype.kind == "f":
        finite = np.isfinite(mask)
        if not finite.all():
            raise DataError(f"{source}: {int((~finite).sum())} NaN/inf values in the mask; masks hold class ids")
        if not np.array_equal(mask, np.round(mask)):
            raise DataError(f"{source}: mask holds non-integer values; masks hold class ids 0..255")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise DataError(f"{source}: mask values span {mask.min()}..{mask.max()}; expected class ids 0..255")
    return mask.astype(np.uint8)


def read_l4s_pair(pair: L4SPair, fill_nan: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (rows, cols, bands), mask uint8 (rows, cols)) of one chip, values checked."""
    with open_hdf5(pair.image) as handle:
        image = handle[IMAGE_KEY][()]
    with open_hdf5(pair.mask) as handle:
        mask = handle[MASK_KEY][()]
    return checked_image(image, pair.image, fill_nan), checked_mask(mask, pair.mask)
