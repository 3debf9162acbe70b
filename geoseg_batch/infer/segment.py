"""Tiled inference over the tile grid with Dask: each tile -> predictor -> its zarr chunks.

The graph has one model task per block of tiles (:func:`task_block`: 4 x 2 of 512, fewer larger ones). Each reads
the union of its tiles' windows from the scene file in one windowed read, straight into the
model's pixel-major layout (neighbouring windows share file blocks, decoded once; the file
stays open on the worker, so blocks the previous task there decoded may still be cached),
normalizes it in place with nodata and the padded area beyond the scene zero (in
normalized space), takes each window as a view of it, predicts them in batches of
``batch_size``, crops each to its tile (``exact``) or weights it for blending (``blend``),
and writes the tile's own chunks of the zarr store, then records the tile as done (resume).
Tasks return only small per-tile records, so nothing scene-sized is ever assembled.
(Slicing windows out of a chunked Dask array instead was measured 4x costlier in decoding:
graph optimization fuses each window's slices into the file reader, so every window
re-decodes all its neighbouring blocks.)

``blend`` uses a smaller halo (the *overlap*): every window's prediction is weighted by a
Hann (sin^2) ramp over 2*overlap pixels from each of its edges that faces another tile
(not the scene's edges), multiplied by the valid-pixel mask; each tile is then the
weighted mean of the windows that cover it, renormalized near nodata and scene edges.

Model tasks carry ``resources={"GPU": 1}`` when asked, so a cluster whose GPU workers
advertise that resource runs every forward pass there; blending tasks run anywhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, get_args

import numpy as np

from geoseg_batch.config import StitchMode
from geoseg_batch.geo.grid import Tile, TileGrid, Window, union
from geoseg_batch.geo.scene import Scene, normalize_in_place
from geoseg_batch.infer.predictor import PredictorRef
from geoseg_batch.infer.reading import SceneInput
from geoseg_batch.infer.stages import StageClock, StageSeconds
from geoseg_batch.infer.thumbnail import ThumbnailPiece, ThumbnailSpec, thumbnail_piece
from geoseg_batch.io.zarr_store import ZarrTarget
from geoseg_batch.runtime import worker_address

STITCH_MODES: tuple[str, ...] = get_args(StitchMode)
TASK_BLOCK = (4, 2)  # tile rows x cols per model task, read as one window: each file block decoded ~1.5x, not 2.5x
BLOCK_TILE = 512
"""The tile size :data:`TASK_BLOCK` is for: larger tiles get fewer per task (:func:`task_block`), so a task's read
window stays near TASK_BLOCK x BLOCK_TILE pixels; smaller tiles keep TASK_BLOCK."""


@dataclass(frozen=True)
class TileRecord:
    """What a tile task reports."""

    index: tuple[int, int]
    computed: bool  # False: every pixel was nodata, the model was not called
    model_pixels: int
    pixels: int = 0  # output pixels of the tile
    worker: str = field(default_factory=worker_address)  # who wrote the tile
    seconds: StageSeconds = StageSeconds()  # the tile's share of its task's time, per stage
    thumbnail: ThumbnailPiece | None = None  # its core's part of the scene's input quicklook, when asked


def window_inputs(tiles: list[Tile], grid: TileGrid, scene: SceneInput, predictor_ref: PredictorRef,
                  clock: StageClock | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tile: (normalized window (rows, cols, bands), valid mask), views into one block buffer.

    The tiles' windows are read as their union, straight into a buffer in the model's
    pixel-major layout that is zero (normalized space) beyond the scene: neighbouring windows
    overlap by twice the halo and share the file's blocks, which a read per window would
    decode again for each. A masked scene's GDAL mask is read for the same window. ``clock`` times the
    read and the normalization.
    """
    clock = clock or StageClock()
    metadata = predictor_ref.get().metadata
    block = union(*(t.window for t in tiles))
    inside = block.intersection(Window.of_shape(grid.shape))
    buffer = np.zeros((*block.shape, len(scene.band_indexes)), np.float32)
    valid = np.zeros(block.shape, bool)
    if inside is not None:
        in_scene = inside.relative_to(block).slices()
        with clock.timing("read"):
            scene.read_into(inside, buffer[in_scene])
            masked = scene.read_valid(inside)
        with clock.timing("normalize"):
            valid[in_scene] = normalize_in_place(buffer[in_scene], scene, metadata, scene.float_source)
        if masked is not None:  # masked pixels are nodata: 0 (the normalized mean), like nodata values
            buffer[in_scene][~masked] = 0.0
            valid[in_scene] &= masked
    return [(buffer[t.window.relative_to(block).slices()], valid[t.window.relative_to(block).slices()])
            for t in tiles]


def batched_probabilities(predictor_ref: PredictorRef, windows: list[np.ndarray], batch_size: int,
                          clock: StageClock | None = None) -> list[np.ndarray]:
    """Probabilities of each window; windows of equal shape go through the model in batches of ``batch_size``
    (timed by ``clock`` as the model stage)."""
    clock = clock or StageClock()
    predictor = predictor_ref.get()
    results: list[np.ndarray | None] = [None] * len(windows)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for number, window in enumerate(windows):
        by_shape.setdefault(window.shape, []).append(number)
    for same_shape in by_shape.values():
        for start in range(0, len(same_shape), batch_size):
            numbers = same_shape[start:start + batch_size]
            with clock.timing("model"):
                batch = predictor.probabilities([windows[n] for n in numbers])
            for n, probabilities in zip(numbers, batch):
                results[n] = probabilities
    return results


def predict_exact(tiles: list[Tile], grid: TileGrid, scene: SceneInput, predictor_ref: PredictorRef,
                  target: ZarrTarget, batch_size: int, thumbnail: ThumbnailSpec | None = None) -> list[TileRecord]:
    """Predict a run of tiles' windows, crop the halos, write the tiles (all-nodata tiles skip the model); each
    record carries its share of the task's stage times (and, with ``thumbnail``, its thumbnail piece)."""
    clock, work, done = StageClock(), [], []
    prepared = window_inputs(tiles, grid, scene, predictor_ref, clock)
    pieces = {t.index: piece for t, piece in zip(tiles, _thumbnail_pieces(tiles, prepared, thumbnail))}
    for tile, (inputs, valid) in zip(tiles, prepared):
        core = tile.core.relative_to(tile.window).slices()
        if valid[core].any():
            work.append((tile, inputs, core, valid[core]))
        else:
            with clock.timing("write"):
                target.mark_done(tile.index)  # the store's fill value is already nodata
            done.append((tile.index, False, 0, _area(tile.core)))
    for (tile, _, core, core_valid), probabilities in zip(work, batched_probabilities(predictor_ref,
                                                                                         [w[1] for w in work],
                                                                                         batch_size, clock)):
        with clock.timing("write"):
            target.write(tile.core, probabilities[core], core_valid)
            target.mark_done(tile.index)
        done.append((tile.index, True, _area(tile.window), _area(tile.core)))
    share = clock.total().share(len(done))
    return [TileRecord(*fields, seconds=share, thumbnail=pieces.get(fields[0])) for fields in done]


def blend_weights(tile: Tile, grid: TileGrid) -> np.ndarray:
    """(rows, cols) Hann ramps over 2*overlap from each window edge that faces another tile."""
    rows, cols = tile.window.shape
    ramp = 2 * grid.halo

    def axis(length: int, start_open: bool, end_open: bool) -> np.ndarray:
        weights = np.ones(length, np.float32)
        if ramp:
            rise = np.sin(0.5 * np.pi * (np.arange(min(ramp, length)) + 0.5) / ramp) ** 2
            if start_open:
                weights[: len(rise)] *= rise
            if end_open:
                weights[length - len(rise):] *= rise[::-1]
        return weights

    scene_rows, scene_cols = grid.shape
    row_weights = axis(rows, tile.core.row0 > 0, tile.core.row1 < scene_rows)
    col_weights = axis(cols, tile.core.col0 > 0, tile.core.col1 < scene_cols)
    return row_weights[:, None] * col_weights[None, :]


class BlendWindow(NamedTuple):
    """One window's part of the blend: its weighted probabilities, weights and valid mask (all None when every
    pixel is nodata), and its share of its model task's time."""

    weighted: np.ndarray | None
    weights: np.ndarray | None
    valid: np.ndarray | None
    seconds: StageSeconds
    thumbnail: ThumbnailPiece | None = None  # its tile's core's part of the input quicklook, when asked


def predict_blend_windows(tiles: list[Tile], grid: TileGrid, scene: SceneInput, predictor_ref: PredictorRef,
                          batch_size: int, thumbnail: ThumbnailSpec | None = None) -> list[BlendWindow]:
    """Per window of a run of tiles: its :class:`BlendWindow` (the model is not called on all-nodata windows;
    with ``thumbnail``, each carries its tile's thumbnail piece)."""
    clock = StageClock()
    prepared = window_inputs(tiles, grid, scene, predictor_ref, clock)
    live = [n for n, (_, valid) in enumerate(prepared) if valid.any()]
    parts: list[tuple[np.ndarray | None, ...]] = [(None, None, None)] * len(tiles)
    for n, probabilities in zip(live, batched_probabilities(predictor_ref, [prepared[n][0] for n in live],
                                                            batch_size, clock)):
        valid = prepared[n][1]
        with clock.timing("write"):
            weights = blend_weights(tiles[n], grid) * valid
            parts[n] = (probabilities * weights[..., None], weights, valid)
    share = clock.total().share(len(tiles))
    pieces = _thumbnail_pieces(tiles, prepared, thumbnail)
    return [BlendWindow(*part, seconds=share, thumbnail=piece) for part, piece in zip(parts, pieces)]


def _thumbnail_pieces(tiles: list[Tile], prepared: list[tuple[np.ndarray, np.ndarray]],
                      thumbnail: ThumbnailSpec | None) -> list[ThumbnailPiece | None]:
    """Per tile: its core's thumbnail piece, from its window's model input and valid mask (None without
    ``thumbnail``)."""
    pieces: list[ThumbnailPiece | None] = []
    for tile, (values, valid) in zip(tiles, prepared):
        core = tile.core.relative_to(tile.window).slices()
        pieces.append(None if thumbnail is None else thumbnail_piece(tile.core, values[core], valid[core], thumbnail))
    return pieces


def combine_blend(tile: Tile, neighbours: list[tuple[Tile, BlendWindow]], target: ZarrTarget) -> list[TileRecord]:
    """Weighted mean over the windows covering ``tile``; writes it. ``neighbours`` includes the tile itself; the
    record carries the tile's own window's share of its model task's time, and this blend's as writing."""
    clock = StageClock()
    own = next(result for other, result in neighbours if other.index == tile.index)
    with clock.timing("write"):
        total, weight = _blended(tile, neighbours)
        valid = None if own.valid is None else own.valid[tile.core.relative_to(tile.window).slices()]
        computed = total is not None and valid is not None and bool(valid.any())
        if computed:
            target.write(tile.core, total / np.maximum(weight, 1e-12)[..., None], valid & (weight > 0))
        target.mark_done(tile.index)
    seconds = own.seconds + clock.total()
    return [TileRecord(tile.index, computed, _area(tile.window) if computed else 0, _area(tile.core),
                       seconds=seconds, thumbnail=own.thumbnail)]


def _blended(tile: Tile, neighbours: list[tuple[Tile, BlendWindow]]) -> tuple[np.ndarray | None, np.ndarray]:
    """(sum of the weighted probabilities over ``tile``'s core (None: no window had any), sum of the weights)."""
    rows, cols = tile.core.shape
    total, weight = None, np.zeros((rows, cols), np.float32)
    for other, result in neighbours:
        overlap = tile.core.intersection(other.window)
        if result.weighted is None or result.weights is None or overlap is None:
            continue
        source = overlap.relative_to(other.window).slices()
        dest = overlap.relative_to(tile.core).slices()
        if total is None:
            total = np.zeros((rows, cols, result.weighted.shape[-1]), np.float32)
        total[dest] += result.weighted[source]
        weight[dest] += result.weights[source]
    return total, weight


def _area(window: Window) -> int:
    return window.shape[0] * window.shape[1]


def segment_graph(scene: Scene, grid: TileGrid, predictor_ref: PredictorRef, target: ZarrTarget, stitch: str,
                  gpu: bool = False, token: str = "scene", batch_size: int = 1, lanes: int = 1,
                  priority: int = 0, thumbnail: ThumbnailSpec | None = None) -> list[Any]:
    """Delayed objects, each returning a list of :class:`TileRecord` (tiles computed by this run).

    One model task per block of tiles (:func:`task_blocks`: read as one window, predicted in
    batches of ``batch_size``); ``token`` keeps task keys unique per scene. Tiles the target
    records as done are left out (resume); blocks are cut from the whole grid first, so a
    resumed tile is batched with the same neighbours as in the first attempt, less those done
    (with ``batch_size`` 1, forward passes are the same).

    Model tasks are prioritized in :func:`task_blocks` order for ``lanes`` worker threads,
    counting down from ``priority`` (so several scenes' graphs queue one after another);
    blending tasks outrank them all, so windows are blended and freed as soon as their
    neighbours are done. With ``thumbnail``, each tile's record carries its piece of the scene's input quicklook
    (:mod:`~geoseg_batch.infer.thumbnail`).
    """
    import dask

    if stitch not in STITCH_MODES:
        raise ValueError(f"stitch must be one of {STITCH_MODES}, got {stitch!r}")
    done = target.done_tiles()
    every_tile = grid.tiles()
    tiles = [t for t in every_tile if t.index not in done]
    inputs = SceneInput.of(scene)
    needed = windows_needed(tiles, stitch)
    batches = [kept for block in task_blocks(every_tile, grid.tile, batch_size, lanes)
               if (kept := [t for t in block if t.index in needed])]

    def model_task(batch: list[Tile]) -> Any:
        key = f"predict-{token}-{_label(batch)}"
        if stitch == "exact":
            return dask.delayed(predict_exact, pure=True)(batch, grid, inputs, predictor_ref, target, batch_size,
                                                          thumbnail, dask_key_name=key)
        return dask.delayed(predict_blend_windows, pure=True, nout=len(batch))(
            batch, grid, inputs, predictor_ref, batch_size, thumbnail, dask_key_name=key)

    predicted = []
    with dask.annotate(resources={"GPU": 1}) if gpu else contextlib.nullcontext():
        for number, batch in enumerate(batches):
            with dask.annotate(priority=priority - number):
                predicted.append(model_task(batch))
    if stitch == "exact":
        return predicted
    windows = {t.index: result[k] for batch, result in zip(batches, predicted) for k, t in enumerate(batch)}
    position = {t.index: number for number, batch in enumerate(batches) for t in batch}
    grid_rows, grid_cols = grid.grid_shape
    records = []
    for t in tiles:
        row, col = t.index
        near = [(grid.tile_at(r, c), windows[(r, c)]) for r in range(max(row - 1, 0), min(row + 2, grid_rows))
                for c in range(max(col - 1, 0), min(col + 2, grid_cols))]
        # Also in block order: Dask walks the graph from its outputs, the first blends first, and sends
        # the model tasks it meets on the way to idle workers before queuing the rest by priority.
        with dask.annotate(priority=BLEND_PRIORITY + priority - position[t.index]):
            records.append(dask.delayed(combine_blend, pure=True)(t, near, target,
                                                                  dask_key_name=f"blend-{token}-{row}-{col}"))
    return records


def windows_needed(tiles: list[Tile], stitch: str) -> set[tuple[int, int]]:
    """Indices of the tiles whose windows must be predicted to output ``tiles``: the tiles themselves
    (``exact``), or their 3x3 neighbourhoods (``blend``: a tile blends its neighbours' windows)."""
    if stitch == "exact":
        return {t.index for t in tiles}
    return {(r, c) for row, col in (t.index for t in tiles) for r in range(row - 1, row + 2)
            for c in range(col - 1, col + 2)}


BLEND_PRIORITY = 2**40  # above every model task of any scene (those count down from 0)


def task_blocks(tiles: list[Tile], tile: int, batch_size: int = 1, lanes: int = 1) -> list[list[Tile]]:
    """``tiles`` (of a grid of ``tile`` pixels) grouped into blocks of :func:`task_block` tiles (wider for large
    batches), in the order ``lanes`` workers taking them in turn should run them.

    A block's windows are read as one: the larger and squarer the block, the fewer file
    blocks are decoded twice at its edges; the smaller, the better the load balance. Blocks
    go in bands of ``lanes`` block rows, column by column: while workers take them in turn,
    each gets the block to the right of its last one, whose window shares a long edge of
    file blocks with it that are still in that worker's block cache. Dask does not promise
    the turns, so this is a tendency: in one instrumented run on the 64 Mpx benchmark scene,
    open files and this order cut decoding time by ~16 %; a fixed order on one worker saves
    ~30 %.
    """
    block_rows, block_cols = task_block(batch_size, tile)
    blocks: dict[tuple[int, int], list[Tile]] = {}
    for each in tiles:
        blocks.setdefault((each.index[0] // block_rows, each.index[1] // block_cols), []).append(each)
    return [blocks[key] for key in sorted(blocks, key=lambda key: (key[0] // lanes, key[1], key[0] % lanes))]


def task_block(batch_size: int = 1, tile: int = BLOCK_TILE) -> tuple[int, int]:
    """(tile rows, tile cols) of one model task over tiles of ``tile`` pixels: :data:`TASK_BLOCK` up to
    :data:`BLOCK_TILE`, beyond it as many tiles as cover about the same pixels (3 x 1 for tiles of 768, 2 x 1 for
    1024 to 1365, 1 x 1 from 1366), widened to hold ``batch_size`` windows."""
    rows, cols = (max(1, min(side, round(side * BLOCK_TILE / tile))) for side in TASK_BLOCK)
    return rows, max(cols, -(-batch_size // rows))


def model_task_count(grid: TileGrid, batch_size: int = 1) -> int:
    """Model tasks of a fresh run over ``grid`` (nothing done before): its blocks as :func:`task_blocks` cuts them,
    counted without listing the tiles."""
    (block_rows, block_cols), (rows, cols) = task_block(batch_size, grid.tile), grid.grid_shape
    return -(-rows // block_rows) * -(-cols // block_cols)


def _label(batch: list[Tile]) -> str:
    """"row0-col0-row1-col1": the first and last tile of a block."""
    (row0, col0), (row1, col1) = batch[0].index, batch[-1].index
    return f"{row0}-{col0}-{row1}-{col1}"


def run_graph(records: list[Any], client: Any | None, progress: Any | None = None) -> list[TileRecord]:
    """Compute the tile records on ``client`` (or Dask's threaded scheduler); tasks retried on worker loss.

    ``progress`` (a :class:`~geoseg_batch.monitor.TileProgress`) advances as tasks finish. The wait is
    as long as the tasks take: run it inside :func:`geoseg_batch.watch.watched` (as predict does) to
    bound it when the cluster loses its workers or its scheduler.
    """
    import dask

    from geoseg_batch.monitor import track

    if client is None:
        batches = dask.compute(*records, scheduler="threads")
    else:
        batches = track(client.compute(records, retries=2), progress,
                        pixels_of=lambda batch: (len(batch), sum(r.pixels for r in batch) / 1e6))
    return [record for batch in batches for record in batch]
