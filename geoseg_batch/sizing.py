"""What a run will need: the bytes of its tasks and chunks and the size of its graph, checked before anything runs.

Every size is computed from the job's arguments and the inputs' metadata (a bundle's
geometry, a scene's or a mosaic grid's shape), never from data, so a run that cannot
fit is refused in a fraction of a second, before its inputs are hashed, before a
cluster starts and before anything of a grid's size exists. Two budgets:

- a *worker's*: one task may use :data:`WORKER_SHARE` of a worker's memory limit (the
  rest is the worker's own: TensorFlow, the model, GDAL's cache; Dask pauses a worker at
  80 %). The limit is the embedded cluster's (``cluster.memory_limit``, else what
  distributed's ``"auto"`` gives: the machine's memory times threads per worker over
  cores), known from the arguments before it starts; an existing cluster's is read from
  its workers once connected (:func:`worker_limit_of`).
- the *client's*: the run's graph holds at most :data:`MAX_GRAPH_TASKS` tiles or chunks,
  at :data:`TASK_RECORD_BYTES` each (task, future, the embedded scheduler's state, the
  chunk lists), and with a store's coordinate arrays within :data:`CLIENT_SHARE` of the
  memory available now.

Sizes are checked as asked (a tile of ``tile`` pixels and a batch of ``batch_size``
windows), not as a particular scene happens to clip them: a job that fits, fits every
scene. Too big is a :class:`~geoseg_batch.errors.ConfigError` (exit 2), one line naming
the argument, what it would need, what there is, and a value that fits.

Model activations (:data:`ACTIVATION_BYTES`) were calibrated once: the peak RSS of one
forward pass of a 768 x 768 window on CPU TensorFlow (U-Nets of depth 3 and 4, base
filters 4, 16 and 32, batches of 1 and 2) was 23-32 bytes per pixel per base filter,
input included; the deeper levels add little (their feature maps are a quarter the
pixels per level for twice the filters).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from geoseg_batch.errors import ConfigError

GiB = 2**30
WORKER_SHARE = 0.5
"""The part of a worker's memory limit one task may use."""
CLIENT_SHARE = 0.5
"""The part of the client machine's available memory a run's graph and metadata may use."""
MAX_GRAPH_TASKS = 500_000
"""Tiles (predict) or chunks (mosaic) one run may hold: beyond, Dask's scheduler spends minutes on overhead."""
TASK_RECORD_BYTES = 16 * 1024
"""Client memory per tile or chunk of a run: its task, future and state in the embedded scheduler, its records."""
COORDINATE_BYTES = 32
"""Client memory per row and column of a store (x/y float64 coordinates, as built and as written)."""
ACTIVATION_BYTES = 32
"""Peak bytes of a forward pass per window pixel and base filter (measured, see the module docstring)."""
LAYER_BYTES = 9
"""Mosaic chunk task, per chunk pixel and source besides its probabilities: mask (1), weight (4), picks (4)."""
POLYGON_BYTES = 64
"""Polygonizing one store chunk, per pixel: mask, probabilities, labels, class probabilities, bincount."""


@dataclass(frozen=True)
class Budget:
    """Where a run's sizes must fit: a worker's memory limit (None: not known yet) and the client's share."""

    worker_limit: int | None
    client_bytes: int
    max_tasks: int = MAX_GRAPH_TASKS

    @property
    def task_bytes(self) -> int | None:
        """Bytes one task may use (None: unknown until the cluster's workers are seen)."""
        return None if self.worker_limit is None else int(self.worker_limit * WORKER_SHARE)


def gib(nbytes: float) -> str:
    """``nbytes`` as ``"12.3 GiB"`` (``"300 MiB"`` below 1 GiB)."""
    return f"{nbytes / GiB:.1f} GiB" if nbytes >= GiB else f"{nbytes / 2**20:.0f} MiB"


def machine_memory() -> tuple[int, int]:
    """(total, available) bytes of this machine, within its cgroup limit (as distributed counts it)."""
    import psutil

    memory = psutil.virtual_memory()
    total = memory.total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                total = min(total, int(limit.read()))
        except (OSError, ValueError):  # no such cgroup file, or "max"
            pass
    return total, min(memory.available, total)


def embedded_worker_limit(spec: Any, cores: int) -> int | None:
    """A worker's memory limit in bytes for cluster ``spec`` (a ClusterSpec) before it starts; None for an
    existing scheduler (read once connected).

    As distributed does: ``memory_limit`` bytes ("4GiB"), or a fraction of the machine (<= 1),
    else ``"auto"``: the machine's memory times threads per worker over ``cores``; never more
    than the machine.
    """
    from dask.utils import parse_bytes

    if spec.scheduler:
        return None
    total, _ = machine_memory()
    given = spec.memory_limit
    if given is None or given == "auto":
        return int(total * min(1.0, spec.threads_per_worker / max(cores, 1)))
    try:
        value = float(given)
        limit = int(value * total) if value <= 1 else int(value)
    except ValueError:
        try:
            limit = parse_bytes(given)
        except ValueError as error:
            raise ConfigError(f"cluster.memory_limit {given!r} is not a size ({error}); expected e.g. '4GiB'") from None
    return min(limit, total)


def worker_limit_of(info: Mapping[str, Any]) -> int | None:
    """The smallest memory limit of the workers in ``info`` (a ``client.scheduler_info()``); None when none has one."""
    limits = [int(w.get("memory_limit") or 0) for w in info.get("workers", {}).values()]
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


def budget_for(spec: Any, client: Any | None = None) -> Budget:
    """The budget of a run on ``client``'s cluster, else on cluster ``spec`` (a ClusterSpec): the workers' memory
    limit (``client``'s workers', else the embedded cluster's before it starts; None for an existing scheduler not
    connected yet) and the client's share of this machine's available memory."""
    from geoseg_batch.runtime import available_cores

    _, available = machine_memory()
    limit = embedded_worker_limit(spec, available_cores()) if client is None else worker_limit_of(
        client.scheduler_info())
    return Budget(limit, int(available * CLIENT_SHARE))


def refuse(argument: str, value: Any, what: str, needed: int, available: str, fix: str) -> ConfigError:
    """The one-line error of a size that does not fit: the argument and its value, the need, what there is, a fix."""
    return ConfigError(f"{argument} {value}: {what} would need {gib(needed)}, {available}; {fix}")


def largest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest n in [low, high] with ``fits(n)`` (``fits`` monotone: true, then false); None when none fits."""
    if not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def smallest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The smallest n in [low, high] with ``fits(n)`` (``fits`` monotone: false, then true); None when none fits."""
    if not fits(high):
        return None
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low


# --------------------------------------------------------------------------- predict


def model_task_bytes(tile: int, halo: int, batch: int, bands: int, base_filters: int, channels: int,
                     block: tuple[int, int]) -> int:
    """Peak bytes of one predict model task: its block of tiles read as one float32 window (with halo), every
    window's probabilities until written, and one forward pass of ``batch`` windows with its activations.

    ``block``: tiles per task (rows, cols), widened to hold ``batch`` windows as the graph does.
    """
    window = (tile + 2 * halo) ** 2
    rows, cols = block[0], max(block[1], -(-batch // block[0]))
    read = (rows * tile + 2 * halo) * (cols * tile + 2 * halo) * (bands * 4 + 1)
    held = rows * cols * window * (channels * 4 + 5)  # blend keeps weights and valid masks too
    return read + held + batch * window * (bands * 4 + base_filters * ACTIVATION_BYTES)


def store_chunk_bytes(tile: int, bands: int, float_output: bool, polygons: bool) -> int:
    """Peak bytes of a task writing, reading back (COG) or polygonizing one ``tile`` x ``tile`` store chunk."""
    per_pixel = 2 * (1 + bands * (4 if float_output else 1)) + bands * 4 + (POLYGON_BYTES if polygons else 0)
    return tile * tile * per_pixel


def tiles_of(shape: tuple[int, int], tile: int) -> int:
    """Tiles (or chunks) of ``tile`` pixels covering ``shape`` (rows, cols)."""
    return math.ceil(shape[0] / tile) * math.ceil(shape[1] / tile)


def graph_bytes(tasks: int, shapes: list[tuple[int, int]]) -> int:
    """Client bytes of a run of ``tasks`` tiles or chunks over stores of ``shapes`` (their coordinates)."""
    return tasks * TASK_RECORD_BYTES + sum(rows + cols for rows, cols in shapes) * COORDINATE_BYTES


def predict_task_bytes(metadata: Any, tile: int, halo: int, batch: int, float_output: bool, polygons: bool) -> int:
    """Peak bytes of predict's largest task over tiles of ``tile`` pixels grown by ``halo``, with the bundle's
    ``metadata``: a model task (its block of tiles for that tile size, batches of ``batch`` windows) or a store
    chunk task (``float_output`` probabilities, ``polygons``)."""
    from geoseg_batch.infer.segment import task_block

    channels = 1 if metadata.binary else len(metadata.classes)
    base_filters = int(metadata.architecture.get("base_filters", 16))
    return max(model_task_bytes(tile, halo, batch, metadata.bands, base_filters, channels, task_block(batch, tile)),
               store_chunk_bytes(tile, channels, float_output, polygons))


def check_predict(job: Any, metadata: Any, shapes: list[tuple[int, int]], halo: int, budget: Budget,
                  tile: int | None = None) -> None:
    """Raise ConfigError unless ``job`` (a PredictJob) with the bundle's ``metadata`` fits ``budget``: a model task
    and a store chunk in a worker (when its limit is known), the tiles of ``shapes`` (the scenes) on the client.

    ``tile``: the tile the run uses (default ``job.tile``; the auto tile when that is None: its grids' tile).
    """
    tile = job.tile if tile is None else tile
    if tile is None:
        raise ValueError("check_predict: no tile; give the run's tile (its grids' tile) when job.tile is auto")
    multiple = metadata.size_multiple

    def task(size: int, batch: int) -> int:
        return predict_task_bytes(metadata, size, halo, batch, job.float_output, job.polygons)

    cap = budget.task_bytes
    if cap is not None and task(tile, job.batch_size) > cap:
        raise _predict_task_refusal(job, tile, task, cap, budget, multiple)
    tiles = sum(tiles_of(shape, tile) for shape in shapes)
    if tiles > budget.max_tasks or graph_bytes(tiles, shapes) > budget.client_bytes:
        steps = _fewest_tiles(tile, shapes, budget, multiple)
        fix = (f"use --tile {steps * multiple} or more" if steps is not None
               and (cap is None or task(steps * multiple, job.batch_size) <= cap)
               else "split the scenes into several runs (no tile keeps both the client and a worker within bounds)")
        if job.resample:  # the scenes' grids are the bundle's resolution: that may be what made them this large
            fix += ", or drop --resample (the scenes resampled to the bundle's resolution are this large)"
        raise refuse("tile (--tile)", _shown_tile(job, tile), f"a run of {tiles} tiles", graph_bytes(tiles, shapes),
                     _client_available(budget), fix)


def _shown_tile(job: Any, tile: int) -> str:
    """The tile as an error names it: ``512``, or ``1264 (auto)`` when the job left it to the planner."""
    return f"{tile}" if job.tile is not None else f"{tile} (auto)"


def _predict_task_refusal(job: Any, tile: int, task: Callable[[int, int], int], cap: int, budget: Budget,
                          multiple: int) -> ConfigError:
    """The error of a predict task too big for a worker: a smaller batch when batches of 1 fit, else a smaller tile."""
    available = f"a worker may use {gib(cap)} (half its {gib(budget.worker_limit or 0)} memory limit)"
    what = f"a model task (tile {tile} + halo, batch {job.batch_size}, with the model's activations)"
    if job.batch_size > 1 and task(tile, 1) <= cap:
        batch = largest(lambda n: task(tile, n) <= cap, 1, job.batch_size)
        return refuse("batch_size (--batch-size)", job.batch_size, what, task(tile, job.batch_size), available,
                      f"use --batch-size {batch} or less")
    steps = largest(lambda n: task(n * multiple, 1) <= cap, 1, max(tile // multiple, 1))
    fix = ("no tile fits: give the workers more memory (cluster.memory_limit) or use fewer, larger workers"
           if steps is None else f"use --tile {steps * multiple} or less"
           + (" with --batch-size 1" if job.batch_size > 1 else ""))
    return refuse("tile (--tile)", _shown_tile(job, tile), what, task(tile, job.batch_size), available, fix)


def _fewest_tiles(tile: int, shapes: list[tuple[int, int]], budget: Budget, multiple: int) -> int | None:
    """The smallest tile (in size multiples) whose tiles of ``shapes`` the client can hold; None when none."""
    def fits(steps: int) -> bool:
        count = sum(tiles_of(shape, steps * multiple) for shape in shapes)
        return count <= budget.max_tasks and graph_bytes(count, shapes) <= budget.client_bytes

    widest = max(max(shape) for shape in shapes)
    return smallest(fits, max(tile // multiple, 1), widest // multiple + 1)


def _client_available(budget: Budget) -> str:
    """What the client has: its memory share and the cap on a run's tasks."""
    return (f"the client may use {gib(budget.client_bytes)} (half of this machine's available memory) and a run "
            f"holds at most {budget.max_tasks} tiles or chunks")


# --------------------------------------------------------------------------- mosaic


@dataclass(frozen=True)
class SourceSize:
    """What one mosaic source costs a chunk task: its probability bands and their bytes, its shape, and how many of
    its pixels one grid pixel spans along (x, y)."""

    bands: int
    itemsize: int
    shape: tuple[int, int]
    span: tuple[float, float]


def mosaic_task_bytes(chunk: int, sources: list[SourceSize], margin: int) -> int:
    """Peak bytes of one mosaic chunk task: every source's layer (twice: read and stacked), the merge, and the
    largest source window under a chunk (warped as int32 indices)."""
    pixels = chunk * chunk
    layers = sum(2 * pixels * (s.bands * s.itemsize + LAYER_BYTES) for s in sources)
    bands = max(s.bands for s in sources)
    window = max(min(s.shape[0], math.ceil(chunk * s.span[1]) + 2 * margin + 1)
                 * min(s.shape[1], math.ceil(chunk * s.span[0]) + 2 * margin + 1) for s in sources)
    return layers + 3 * pixels * bands * 4 + 8 * window


def check_mosaic(job: Any, shape: tuple[int, int], resolution: tuple[float, float], sources: list[SourceSize],
                 margin: int, budget: Budget, scenes_bounds: tuple[float, ...] | None = None) -> None:
    """Raise ConfigError unless a mosaic of ``job`` (a MosaicJob) on a grid of ``shape`` at ``resolution`` (x, y)
    fits ``budget``: a chunk task in a worker (when its limit is known) and the grid's chunks on the client.

    ``scenes_bounds``: the sources' union (what ``--bounds`` could be), named in the fix of too large bounds.
    """
    cap = budget.task_bytes
    if cap is not None and mosaic_task_bytes(job.chunk, sources, margin) > cap:
        chunk = largest(lambda c: mosaic_task_bytes(c, sources, margin) <= cap, 16, job.chunk)
        fix = ("no chunk fits: give the workers more memory (cluster.memory_limit)" if chunk is None
               else f"use --chunk {chunk} or less")
        raise refuse("chunk (--chunk)", job.chunk, f"a chunk task over {len(sources)} scenes",
                     mosaic_task_bytes(job.chunk, sources, margin),
                     f"a worker may use {gib(cap)} (half its {gib(budget.worker_limit or 0)} memory limit)", fix)
    chunks = tiles_of(shape, job.chunk)
    if chunks <= budget.max_tasks and graph_bytes(chunks, [shape]) <= budget.client_bytes:
        return
    what = f"a grid of {shape[0]} x {shape[1]} pixels in {chunks} chunks of {job.chunk}"
    coarser = f"--resolution {coarsest_fit(job.chunk, shape, resolution, budget):g} or coarser"
    if job.resolution is not None:
        argument, value, fix = "resolution (--resolution)", job.resolution, f"use {coarser} (or smaller --bounds)"
    elif job.bounds is not None:
        within = "" if scenes_bounds is None else f" (the scenes cover {' '.join(f'{v:.12g}' for v in scenes_bounds)})"
        argument, value, fix = "bounds (--bounds)", " ".join(f"{v:g}" for v in job.bounds), \
            f"use smaller --bounds{within}, or {coarser}"
    else:
        argument, value, fix = "chunk (--chunk)", job.chunk, f"use a larger --chunk or {coarser}"
    raise refuse(argument, value, what, graph_bytes(chunks, [shape]), _client_available(budget), fix)


def coarsest_fit(chunk: int, shape: tuple[int, int], resolution: tuple[float, float], budget: Budget) -> float:
    """The finest pixel size (two significant digits, rounded up) whose grid over the same extent as ``shape`` at
    ``resolution`` (x, y) keeps the client within ``budget``."""
    height, width = shape[0] * resolution[1], shape[1] * resolution[0]

    def fits(size: float) -> bool:
        grid = (math.ceil(height / size - 1e-9), math.ceil(width / size - 1e-9))
        count = tiles_of(grid, chunk)
        return count <= budget.max_tasks and graph_bytes(count, [grid]) <= budget.client_bytes

    size = max(resolution)
    while not fits(size):
        size *= 2
    low = size / 2
    for _ in range(60):  # bisection on the pixel size: fits is monotone in it
        middle = (low + size) / 2
        low, size = (low, middle) if fits(middle) else (middle, size)
    digits = 10 ** (math.floor(math.log10(size)) - 1)
    nice = math.ceil(size / digits - 1e-9) * digits
    return float(f"{nice:.2g}") if fits(float(f"{nice:.2g}")) else nice
