"""Reading a scene's windows on the workers: what a task carries of a scene (:class:`SceneInput`), the files kept
open per worker thread, and the bounded GDAL block cache around each read.

A model task reads the union of its tiles' windows in one windowed read straight into the
model's pixel-major layout; the file stays open on the worker thread (``_open_scenes``), so
blocks the previous task there decoded may still be cached, within a cache sized to the
window (:func:`_gdal_block_cache`, restored after each read: the setting would otherwise stick).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg_batch.geo.grid import Window
from geoseg_batch.geo.scene import Resampled, Scene
from geoseg_batch.io.remote import CloudSettings
from geoseg_batch.io.urls import gdal_path, is_url


@dataclass(frozen=True)
class SceneInput:
    """The picklable part of a Scene that tasks need: where to read and how to make model input."""

    path: str
    band_indexes: tuple[int, ...]
    nodata: float | None
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    dtype: str
    resampled: Resampled | None = None
    masked: bool = False  # GDAL's mask (per-dataset mask, alpha band, a warp's footprint) marks nodata too
    cloud: CloudSettings | None = None  # object storage settings (no secrets), applied on the worker
    source: str = ""  # what GDAL opens (Scene.dataset): the path, /vsis3/bucket/key, or a VRT's XML

    @classmethod
    def of(cls, scene: Scene) -> SceneInput:
        """The picklable part of ``scene``."""
        return cls(str(scene.path), scene.band_indexes, scene.nodata, scene.scales, scene.offsets,
                   str(scene.data.dtype), scene.resampled, scene.masked, scene.cloud, scene.dataset)

    def read_valid(self, window: Window) -> np.ndarray | None:
        """(rows, cols) True where GDAL's mask of ``window`` marks pixels valid; None when the scene has no
        mask (nodata values are checked on the pixels themselves)."""
        if not self.masked:
            return None
        return _open_scenes.dataset(self).read_masks(self.band_indexes[0], window=window.to_rasterio()) != 0

    def read_into(self, window: Window, out: np.ndarray) -> None:
        """Read ``window`` (inside the scene) into ``out`` (rows, cols, bands) float32, a view is fine."""
        src = _open_scenes.dataset(self)
        gdal_window = window.to_rasterio()
        with _gdal_block_cache(_block_cache_bytes(src, window, self.resampled is not None)):
            if np.dtype(self.dtype).itemsize <= 2 or self.dtype == "float32":  # exact in float32: GDAL converts
                src.read(self.band_indexes, window=gdal_window, out=out.transpose(2, 0, 1))
            else:  # wider integers: nodata must be compared before rounding to float32
                out[...] = np.moveaxis(src.read(self.band_indexes, window=gdal_window), 0, -1)

    @property
    def dataset(self) -> str:
        """The name GDAL opens the scene by (``source``, else the path's)."""
        return self.source or gdal_path(self.path)

    @property
    def float_source(self) -> bool:
        """Whether the scene's pixels are floating point (nodata may then be NaN or infinite)."""
        return np.dtype(self.dtype).kind == "f"


class _OpenScenes(threading.local):
    """This thread's open scene file, kept open from task to task.

    A task's window shares file blocks with its neighbours' windows; when this worker ran
    one of them just before, those blocks are still in GDAL's block cache (a dataset's cache
    dies with it), and opening the file each time costs a tenth of a read by itself. Keyed
    by the file's identity and modification time, so a rewritten scene is opened afresh.
    One scene per thread stays open after a run, with at most its last read's cache
    (:func:`_block_cache_bytes`).
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.handles = contextlib.ExitStack()
        self.source: Any = None

    def dataset(self, scene: SceneInput) -> Any:
        """The open rasterio dataset (or WarpedVRT, when resampled) of ``scene`` on this thread."""
        import rasterio

        if scene.cloud is not None:
            scene.cloud.apply()  # this worker's GDAL reads object storage as the client does
        key = (scene.dataset, *_identity(scene.dataset), scene.resampled, scene.nodata)
        if key != self.key:
            self.handles.close()  # the previous scene, and its cached blocks
            self.key, self.handles = None, contextlib.ExitStack()
            source = self.handles.enter_context(rasterio.open(scene.dataset))
            if scene.resampled is not None:
                source = self.handles.enter_context(scene.resampled.warped(source, scene.nodata))
            self.key, self.source = key, source
        return self.source


_open_scenes = _OpenScenes()


def _identity(dataset: str) -> tuple[int, ...]:
    """(inode, size, mtime) of a local scene file; () for an object (``/vsis3/...``: objects are not rewritten
    under a run, a changed object is a new run key) and for a VRT's XML (a STAC Item's: its assets' ETags
    are in the run key)."""
    if dataset.startswith(("/vsi", "<")) or is_url(dataset):
        return ()
    stat = os.stat(dataset)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@contextlib.contextmanager
def _gdal_block_cache(nbytes: int) -> Iterator[None]:
    """GDAL's (process-wide) block cache capped at ``nbytes`` while open, then as it was.

    Set and restored by hand: ``rasterio.Env(GDAL_CACHEMAX=...)`` can leave its value in
    force after it closes, and a worker's later reads (quicklooks, COGs, mosaics) then
    decode blocks several times over.
    """
    from rasterio.env import get_gdal_config, set_gdal_config

    before = get_gdal_config("GDAL_CACHEMAX")
    set_gdal_config("GDAL_CACHEMAX", nbytes)
    try:
        yield
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def _block_cache_bytes(src: Any, window: Window, resampled: bool) -> int:
    """GDAL block cache for reading ``window``: the file blocks it touches, with room to spare.

    Enough to keep the previous read's blocks while this one's come in (so shared blocks
    hit), and no more: a worker's memory must not grow with the scene. A resampled read
    also caches its source's blocks.
    """
    block_rows, block_cols = src.block_shapes[0]
    rows = (window.row1 - 1) // block_rows - window.row0 // block_rows + 1
    cols = (window.col1 - 1) // block_cols - window.col0 // block_cols + 1
    footprint = rows * block_rows * cols * block_cols * src.count * np.dtype(src.dtypes[0]).itemsize
    return int(footprint * (2.5 if resampled else 1.25)) + 2**24
