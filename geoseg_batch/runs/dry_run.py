"""``predict --dry-run``: the plan of a run, computed from the job and the inputs' metadata, nothing computed.

A dry run reads the bundle's metadata (not its weights) and opens every scene's header (as a
real run does before anything else), then counts, without listing a tile: the tiles of every
scene's grid (of the run's tile: ``--tile``, else the auto tile, :mod:`~geoseg_batch.runs.tile_size`), the model
tasks (blocks of :func:`~geoseg_batch.infer.segment.task_block` tiles),
the blending and product tasks, the client's graph and the bytes of one task against the
workers' memory (:mod:`geoseg_batch.sizing`, the same figures the size checks refuse by), the
pixels the model computes (tiles and halo) and an *estimated* time. It starts no cluster
(nor connects to a scheduler), hashes no input, reads no pixel (so the scene checks, which sample
pixels, are not run), writes nothing to ``out`` (no manifest: the result's
``summary["plan"]`` is the plan, and the CLI prints it in a few lines). A run that would not
fit is refused by the size checks before the plan, in the same one line as a real run.

The estimate is the time of the model's forward passes over the pixels it must compute, at the
speed measured in predict for one model scaled to this one by their multiply-adds per pixel
(:func:`multiply_adds_per_pixel`), on the cluster's cores, divided by the pipeline's
measured efficiency: an order of magnitude for a CPU cluster, not a measurement
(``geoseg-batch bench predict`` measures).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from geoseg_batch.config import PredictJob
from geoseg_batch.runs.result import JobResult

if TYPE_CHECKING:
    from geoseg_batch.model.bundle import BundleMetadata
    from geoseg_batch.runs.scenes import ScenePlan
    from geoseg_batch.sizing import Budget

REFERENCE_MODEL = {"model_type": "unet", "bands": 14, "classes": 2, "depth": 4, "base_filters": 16}
"""The model whose speed in predict was measured (the bench's default: ``bench predict``)."""
REFERENCE_MPX_PER_S_PER_CORE = {"float32": 0.8, "bfloat16": 1.4}
"""Speed of :data:`REFERENCE_MODEL`'s forward passes in the pipeline, model pixels per second and CPU core, from
issue 17's figures on this project's 2-core machine: predict's default (exact, tile 512) ran 0.70 / 1.18 output
Mpx/s in float32 / bfloat16, computing 2.15 model pixels per output pixel, the model ~0.9 of the time (its
roofline efficiency): 0.70 x 2.15 / 0.9 / 2 cores. So the estimate of that run is 64 x 2.15 / 1.6 / 0.9 = 96 s
for the 91 s measured. (Pre-cut 512 x 512 tiles in one process, ``bench predict``'s raw figure, ran up to twice
as fast: the estimate is of a run, not of the model alone.)"""
PIPELINE_EFFICIENCY = 0.9
"""Model time over run time measured by ``bench predict``'s roofline on a CPU (the I/O path's share: the rest)."""


def multiply_adds_per_pixel(model_type: str, bands: int, classes: int, depth: int, base_filters: int) -> float:
    """Multiply-adds of one forward pass per input pixel of a U-Net (:mod:`geoseg_batch.model.unet`): per level,
    its 3 x 3 convolutions (and the decoder's 2 x 2 transposed one, an Attention U-Net's 1 x 1 gates), at a quarter
    of the pixels per level down."""
    filters = [base_filters * 2**level for level in range(depth + 1)]
    total = 0.0
    for level in range(depth + 1):  # encoder blocks and the bottleneck
        inputs = bands if level == 0 else filters[level - 1]
        total += 9 * filters[level] * (inputs + filters[level]) / 4**level
    for level in range(depth):  # decoder: upsampling from below, the concatenated block
        width = filters[level]
        gate = (2 * width * max(width // 2, 1) + max(width // 2, 1)) if model_type == "attention_unet" else 0
        total += (filters[level + 1] * width + gate + 9 * width * (2 * width + width)) / 4**level
    return total + filters[0] * (1 if classes == 2 else classes)


def model_mpx_per_s(metadata: BundleMetadata, precision: str, cores: int) -> float:
    """Estimated raw speed of the bundle's forward passes on ``cores`` CPU cores, model Mpx/s."""
    architecture = metadata.architecture
    work = multiply_adds_per_pixel(metadata.model_type, metadata.bands, len(metadata.classes),
                                   int(architecture.get("depth", 4)), int(architecture.get("base_filters", 16)))
    reference = multiply_adds_per_pixel(**REFERENCE_MODEL)
    return REFERENCE_MPX_PER_S_PER_CORE[precision] * reference / work * cores


def model_lanes_of(job: PredictJob, client: Any | None = None) -> int | None:
    """CPU cores the model tasks run on: ``client``'s worker threads, else the embedded cluster's (its worker
    threads, at most this machine's cores); None for an existing scheduler (a dry run does not connect)."""
    from geoseg_batch.runtime import available_cores

    if client is not None:
        from geoseg_batch.cluster import model_lanes

        return model_lanes(client, False)
    if job.cluster.scheduler:
        return None
    cores = available_cores()
    return min(cores, (job.cluster.workers or cores) * job.cluster.threads_per_worker)


def predict_plan(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], budget: Budget,
                 client: Any | None = None) -> dict[str, Any]:
    """The plan of predicting ``plans`` (their grids made) with the bundle's ``metadata`` within ``budget`` (on
    ``client``'s cluster, else the job's): counts, bytes and the estimate as a JSON-ready dict (see the module
    docstring)."""
    from geoseg_batch.infer.segment import model_task_count, task_block
    from geoseg_batch.sizing import graph_bytes, model_task_bytes, store_chunk_bytes

    grids = [p.grid for p in plans]
    tiles = sum(math.prod(g.grid_shape) for g in grids)
    pixels = sum(math.prod(g.shape) for g in grids)
    model_pixels = sum(g.computed_pixels() for g in grids)
    model_tasks = sum(model_task_count(g, job.batch_size) for g in grids)
    blend_tasks = tiles if job.stitch == "blend" else 0
    product_tasks = (2 * len(plans) if job.cog else 0) + (tiles if job.polygons else 0)
    channels = 1 if metadata.binary else len(metadata.classes)
    halo, tile = grids[0].halo, grids[0].tile
    block = task_block(job.batch_size, tile)
    largest = max(grids, key=lambda g: math.prod(g.shape))
    return {
        "scenes": len(plans), "megapixels": round(pixels / 1e6, 3), "largest_scene": list(largest.shape),
        "stitch": job.stitch, "tile": tile, "tile_auto": job.tile is None, "halo": halo,
        "batch_size": job.batch_size,
        "tiles": tiles, "model_tasks": model_tasks, "tiles_per_model_task": list(block),
        "blend_tasks": blend_tasks, "product_tasks": product_tasks,
        "graph_tasks": model_tasks + blend_tasks + product_tasks,
        "model_task_bytes": model_task_bytes(tile, halo, job.batch_size, metadata.bands,
                                             int(metadata.architecture.get("base_filters", 16)), channels, block),
        "store_chunk_bytes": store_chunk_bytes(tile, channels, job.float_output, job.polygons),
        "worker_limit_bytes": budget.worker_limit, "task_may_use_bytes": budget.task_bytes,
        "graph_bytes": graph_bytes(tiles, [g.shape for g in grids]), "client_may_use_bytes": budget.client_bytes,
        "max_graph_tiles": budget.max_tasks,
        "model_megapixels": round(model_pixels / 1e6, 3),
        "model_pixels_per_output_pixel": round(model_pixels / max(pixels, 1), 4),
        "estimate": _estimate(job, metadata, model_pixels, model_lanes_of(job, client)),
    }


def _estimate(job: PredictJob, metadata: BundleMetadata, model_pixels: int, cores: int | None) -> dict[str, Any]:
    """The estimated time of the run: the model's passes over ``model_pixels`` at the estimated speed, on ``cores``
    (None: not known, per core), over the pipeline's efficiency."""
    rate = model_mpx_per_s(metadata, job.precision, cores or 1)
    model_s = model_pixels / 1e6 / rate
    basis = ["estimate: the model's forward passes over its pixels (tiles and halo) at the CPU speed measured in "
             "predict for one model, scaled to this one by multiply-adds per pixel, over a pipeline efficiency of "
             f"{PIPELINE_EFFICIENCY}"]
    if job.gpu:
        basis.append("CPU figures: GPU workers are faster")
    if not cores:
        basis.append("on one core (the scheduler's are not known before connecting): divide by its cores")
    return {"seconds": round(model_s / PIPELINE_EFFICIENCY, 1), "model_seconds": round(model_s, 1),
            "cores": cores, "model_mpx_per_s": round(rate, 4), "precision": job.precision, "basis": "; ".join(basis)}


def dry_run_result(job: PredictJob, metadata: BundleMetadata, plans: list[ScenePlan], client: Any | None,
                   out: Any) -> JobResult:
    """The result of ``predict --dry-run``: no outputs, nothing written (``manifest`` names where a run's would
    be; none is), ``summary["plan"]`` the plan (:func:`plan_lines` prints it)."""
    from geoseg_batch.sizing import budget_for

    plan = predict_plan(job, metadata, plans, budget_for(job.cluster, client), client)
    return JobResult("predict", out, out / "manifest.json", [], {
        "dry_run": True, "scenes": plan["scenes"], "megapixels": plan["megapixels"], "tiles_total": plan["tiles"],
        "plan": plan})


def plan_lines(plan: dict[str, Any], out: Any) -> list[str]:
    """The plan as the CLI prints it: a few lines."""
    from geoseg_batch.sizing import gib

    worker = ("a worker may use " + gib(plan["task_may_use_bytes"]) + f" (half its {gib(plan['worker_limit_bytes'])}"
              " memory limit)") if plan["worker_limit_bytes"] else "the workers' memory limit is known once connected"
    estimate = plan["estimate"]
    where = (f"on {_counted(estimate['cores'], 'core')}" if estimate["cores"]
             else "per worker core of the scheduler's cluster")
    rows, cols = plan["largest_scene"]
    return [
        f"dry run: nothing computed, nothing written to {out}",
        f"{_counted(plan['scenes'], 'scene')}, {plan['megapixels']:g} Mpx (largest {rows} x {cols}); "
        f"{plan['stitch']} stitch, tile {plan['tile']}{' (auto)' if plan.get('tile_auto') else ''}, "
        f"halo {plan['halo']}: {plan['tiles']} tiles",
        f"tasks: {plan['model_tasks']} model tasks ({'x'.join(map(str, plan['tiles_per_model_task']))} tiles each), "
        f"{plan['blend_tasks']} blend, {plan['product_tasks']} product; graph {plan['graph_tasks']} tasks, "
        f"~{gib(plan['graph_bytes'])} of the {gib(plan['client_may_use_bytes'])} the client may use",
        f"memory per task: model {gib(plan['model_task_bytes'])}, store chunk {gib(plan['store_chunk_bytes'])}; "
        f"{worker}",
        f"model work: {plan['model_megapixels']:.0f} Mpx ({plan['model_pixels_per_output_pixel']:.2f} per output "
        "pixel); "
        f"estimated time ~{_duration(estimate['seconds'])} {where} ({estimate['precision']}, "
        f"~{estimate['model_mpx_per_s']:.2g} model Mpx/s; an estimate, not a measurement)",
    ]


def _counted(count: int, noun: str) -> str:
    """"1 scene", "3 scenes"."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _duration(seconds: float) -> str:
    """``seconds`` as "42 s", "12 min" or "3.4 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
