"""``bench predict --scenes N``: many ordinary scenes in one run against one large scene of the same pixels.

Side by side over ``repeats`` rounds (the order of the two runs reversed every other round, so both see the same
noisy machine), medians reported: ``geoseg-batch predict`` of **one** synthetic scene of ``megapixels`` Mpx, and
one predict invocation over **many**: ``scenes`` synthetic scenes of ``megapixels / scenes`` Mpx each (same
model, settings and total pixels). Each run's output Mpx/s (``whole``: the run's own wall time, as its manifest
gives it; ``end_to_end``: the process, from start-up to exit, its run report included), its phases and its peak
memory (the run's process tree and its workers); ``many_over_one``: the ratio of many's Mpx/s to one's (per round
and the median). With ``scaling``, every round also runs a **quarter**-size scene, for the memory-flat figure: the
peak memory of that scene against the one scene, 4x its pixels (:func:`~geoseg_batch.bench.memory_scaling`).
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from geoseg_batch.bench import _bench_bundle, _bench_scene, _pipeline_run, memory_scaling
from geoseg_batch.errors import ConfigError
from geoseg_batch.io.publish import write_json

log = logging.getLogger(__name__)

SIDES = ("one", "many")
RUN_KEYS = ("whole_mpx_per_s", "end_to_end_mpx_per_s", "setup_s", "tiles_s", "cogs_s", "wall_s", "seconds",
            "peak_tree_rss_bytes", "peak_worker_rss_bytes")
"""The figures of every run (each the median over the rounds)."""


def bench_scenes(json_path: str | Path, megapixels: float = 64.0, scenes: int = 16, tile: int | None = None,
                 stitch: str = "exact", bands: int = 14, depth: int = 4, base_filters: int = 16, batch_size: int = 1,
                 workers: int | None = None, precision: str = "float32", repeats: int = 3,
                 scaling: bool = False) -> dict[str, Any]:
    """One scene of ``megapixels`` vs ``scenes`` scenes of ``megapixels / scenes`` in one run (medians of
    ``repeats`` rounds; see the module docstring); the figures, also written to ``json_path``."""
    if scenes < 2:
        raise ConfigError(f"--scenes: got {scenes}; expected at least 2 (the many scenes of one run)")
    if repeats < 1:
        raise ConfigError(f"--repeats: got {repeats}; expected at least 1 (rounds of both runs)")
    sides = SIDES + (("quarter",) if scaling else ())
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-scenes-") as tmp:
        root = Path(tmp)
        bundle = _bench_bundle(root / "model.keras", bands, depth, base_filters)
        inputs = _inputs(root, megapixels, scenes, bands, scaling)
        settings = (bundle, tile, stitch, batch_size, workers, precision)
        rounds = []
        for number in range(repeats):
            order = sides if number % 2 == 0 else sides[::-1]
            rounds.append({side: _run(root, side, inputs[side], settings) for side in order})
        figures: dict[str, Any] = {
            "megapixels": megapixels, "scenes": scenes, "tile": tile, "stitch": stitch, "bands": bands,
            "depth": depth, "base_filters": base_filters, "batch_size": batch_size, "workers": workers,
            "precision": precision, "repeats": repeats,
            "megapixels_one": rounds[0]["one"]["megapixels"], "megapixels_many": rounds[0]["many"]["megapixels"],
            **{side: {key: statistics.median(r[side][key] for r in rounds) for key in RUN_KEYS} for side in sides},
            "tiles": {side: rounds[0][side]["tile"] for side in sides},  # tile None: each run's auto tile
        }
        figures.update(_ratios(rounds))
        if scaling:
            figures["scaling"] = _scaling(figures, rounds)
        figures["rounds"] = rounds
    write_json(json_path, figures)
    return figures


def _inputs(root: Path, megapixels: float, scenes: int, bands: int, scaling: bool) -> dict[str, Any]:
    """{side: its scene, or (``many``) its list of scenes}: synthetic scenes written under ``root``."""
    for side in ("one", "many", "quarter"):
        (root / side).mkdir()
    inputs: dict[str, Any] = {
        "one": _bench_scene(root / "one" / "scene.tif", megapixels, bands, seed=5),
        "many": [_bench_scene(root / "many" / f"scene_{k:03d}.tif", megapixels / scenes, bands, seed=7 + k)
                 for k in range(scenes)]}
    if scaling:
        inputs["quarter"] = _bench_scene(root / "quarter" / "scene.tif", megapixels / 4, bands, seed=6)
    os.sync()  # the first run would otherwise read (and hash) while gigabytes of fresh scenes are written back
    return inputs


def _run(root: Path, side: str, scene: Path | list[Path], settings: tuple[Any, ...]) -> dict[str, Any]:
    """One predict run of ``scene`` (a list: those scenes in one run) with ``settings``; its figures
    (:data:`RUN_KEYS`, and its ``megapixels`` and ``scenes``)."""
    out = root / f"out_{side}"
    run = _pipeline_run(scene, settings[0], out, *settings[1:])
    shutil.rmtree(out)
    summary = run["summary"]
    log.info("bench scenes: %s: %.3f Mpx/s (end to end %.3f)", side, summary["mpx_per_s"], run["mpx_per_s"])
    return {"megapixels": summary["megapixels"], "scenes": summary["scenes"], "tile": summary["tile"],
            "whole_mpx_per_s": summary["mpx_per_s"], "end_to_end_mpx_per_s": run["mpx_per_s"],
            **{key: summary["phases"][key] for key in ("setup_s", "tiles_s", "cogs_s")},
            "wall_s": summary["wall_s"], "seconds": run["seconds"],
            "peak_tree_rss_bytes": summary["peak_tree_rss_bytes"],
            "peak_worker_rss_bytes": summary["peak_worker_rss_bytes"]}


def _ratios(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Many over one of each round, for the run's own Mpx/s and end to end, and their medians."""
    figures: dict[str, Any] = {}
    for speed in ("whole", "end_to_end"):
        per_round = [r["many"][f"{speed}_mpx_per_s"] / r["one"][f"{speed}_mpx_per_s"] for r in rounds]
        figures[f"many_over_one_{speed}"] = statistics.median(per_round)
        figures[f"many_over_one_{speed}_per_round"] = per_round
    return figures


def _scaling(figures: dict[str, Any], rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Peak memory of the quarter-size scene against the one scene (4x its pixels), medians over the rounds:
    :func:`~geoseg_batch.bench.memory_scaling`'s figures, and the same for the workers alone."""
    median = {side: {"summary": {"megapixels": rounds[0][side]["megapixels"]},
                     "peak_rss_bytes": figures[side]["peak_tree_rss_bytes"]} for side in ("quarter", "one")}
    scaling = memory_scaling(median["quarter"], median["one"])
    small, large = (figures[side]["peak_worker_rss_bytes"] for side in ("quarter", "one"))
    return {**scaling, "peak_worker_rss_small_bytes": small, "peak_worker_rss_large_bytes": large,
            "worker_growth": large / small - 1}


def scenes_table(figures: dict[str, Any]) -> list[list[str]]:
    """The README's rows (figure, value) of :func:`bench_scenes`'s figures."""
    one, many, scenes = figures["one"], figures["many"], figures["scenes"]
    size = figures["megapixels_many"] / scenes
    rows = [[f"one scene of {figures['megapixels_one']:.1f} Mpx: whole run / end to end",
             f"{one['whole_mpx_per_s']:.2f} / {one['end_to_end_mpx_per_s']:.2f} Mpx/s"],
            [f"{scenes} scenes of {size:.2f} Mpx in one run: whole run / end to end",
             f"{many['whole_mpx_per_s']:.2f} / {many['end_to_end_mpx_per_s']:.2f} Mpx/s"],
            [f"{scenes} scenes over one scene: whole run / end to end",
             f"{figures['many_over_one_whole']:.2f} / {figures['many_over_one_end_to_end']:.2f}"],
            ["peak memory (process tree), one scene / many scenes",
             f"{one['peak_tree_rss_bytes'] / 2**30:.2f} / {many['peak_tree_rss_bytes'] / 2**30:.2f} GiB"]]
    if "scaling" in figures:
        scaling = figures["scaling"]
        rows.append([f"peak memory (process tree), {scaling['megapixels_small']:.1f} Mpx scene / "
                     f"{scaling['megapixels_large']:.1f} Mpx scene",
                     f"{scaling['peak_rss_small_bytes'] / 2**30:.2f} / {scaling['peak_rss_large_bytes'] / 2**30:.2f}"
                     f" GiB ({scaling['growth']:+.0%}; workers {scaling['worker_growth']:+.0%})"])
    return rows
