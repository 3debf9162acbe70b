"""``bench predict --roofline``: where predict's time goes, and how close it is to what the machine can do.

On one synthetic scene, side by side over ``repeats`` rounds (the order of the runs reversed every other round, so
every run sees the same noisy machine), medians reported:

- the GDAL **decode ceiling**: every block of the scene read once by ``threads`` threads (each its own dataset,
  half of the blocks each, ``GDAL_CACHEMAX`` small), Mpx/s;
- **raw**: each model alone on pre-cut in-memory tiles (:func:`geoseg_batch.bench._predict_worker`), Mpx/s of
  model input; all models and precisions of a round in one process;
  both measured at the start and at the end of each round, the faster one counting (what the machine can do);
- ``geoseg-batch predict`` with a **near-free model** (depth 1, 1 filter, same bands: the I/O path's own speed)
  and with the **real model**, each stitch mode (and precision): whole run (the run's own wall time) and tiles
  phase, its phases, and the model pixels computed per output pixel (``1 + overlap_fraction``).

The **roofline** of a run is the time it would take if the cores did nothing but the model's passes at raw speed
over the pixels the model must compute, plus one decode of the scene's pixels at the decode ceiling:
``roofline_s = scene_px * model_px_per_output_px / raw + scene_px / decode``; its **efficiency** is
``roofline_s / wall_s`` (``tiles_efficiency``: over the tiles phase alone). Raw runs tiles of ``tile`` pixels a
side (:data:`RAW_TILE` unless ``tile`` is given; the pipeline's windows are larger, the speed per pixel the
same: 0.90 / 0.93 / 0.91 Mpx/s at 512 / 1216 / 1520 pixels a side, medians of 3 side by side on one core pair).
``tile`` None (the default) runs predict with its own default, the auto tile (:mod:`geoseg_batch.runs.tile_size`);
each run's tile is in its figures.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from geoseg_batch.bench import RAW_TILE, _bench_bundle, _bench_scene, _pipeline_run, _predict_worker, worker_exit
from geoseg_batch.errors import ConfigError
from geoseg_batch.infer.stages import STAGES
from geoseg_batch.io.publish import write_json

log = logging.getLogger(__name__)

STITCHES = ("exact", "blend")
NEAR_FREE = "near_free"
"""The name of the near-free model's runs (depth 1, 1 filter)."""
DECODE_CACHE_MB = 16
"""GDAL's block cache while the decode ceiling is measured: small, so every block is decoded."""
RUN_KEYS = ("whole_mpx_per_s", "end_to_end_mpx_per_s", "tiles_mpx_per_s", "setup_s", "tiles_s", "cogs_s",
            "wall_s", "model_px_per_output_px", "raw_mpx_per_s", "roofline_s", "efficiency", "tiles_efficiency",
            "whole_over_decode", "tiles_over_decode", "peak_rss_bytes", *(f"{stage}_thread_s" for stage in STAGES))
"""The figures of every run (each the median over the rounds); ``<stage>_thread_s``: the tiles phase's
thread-seconds per stage (:mod:`geoseg_batch.infer.stages`), summed over the workers."""


def bench_roofline(json_path: str | Path, megapixels: float = 64.0, tile: int | None = None, bands: int = 14,
                   depth: int = 4, base_filters: int = 16, batch_size: int = 1, workers: int | None = None,
                   precisions: tuple[str, ...] = ("float32",), stitches: tuple[str, ...] = STITCHES,
                   repeats: int = 3, raw_tiles: int = 8) -> dict[str, Any]:
    """Decode ceiling, near-free and real-model predict runs and their roofline efficiencies (medians of
    ``repeats`` rounds); the figures (with ``table``: the README's rows), also written to ``json_path``."""
    _check(precisions, stitches, repeats)
    threads = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-roofline-") as tmp:
        root = Path(tmp)
        bundles = {NEAR_FREE: _bench_bundle(root / "near_free.keras", bands, 1, 1),
                   "real": _bench_bundle(root / "model.keras", bands, depth, base_filters)}
        scene = _bench_scene(root / "scene.tif", megapixels, bands, seed=5)
        plan = _run_plan(precisions, stitches)
        rounds = []
        for number in range(repeats):
            order = plan if number % 2 == 0 else plan[::-1]
            rounds.append(_round(root, scene, bundles, order, tile, batch_size, workers, threads, raw_tiles))
        figures: dict[str, Any] = {
            "megapixels": rounds[0]["megapixels"], "tile": tile, "bands": bands, "depth": depth,
            "base_filters": base_filters, "batch_size": batch_size, "workers": workers, "decode_threads": threads,
            "precisions": list(precisions), "stitches": list(stitches), "repeats": repeats, "raw_tiles": raw_tiles,
            "decode_mpx_per_s": statistics.median(r["decode_mpx_per_s"] for r in rounds),
            "runs": {name: _medians([r["runs"][name] for r in rounds]) for name, *_ in plan},
        }
        figures["table"] = roofline_table(figures)
        figures["rounds"] = rounds
    write_json(json_path, figures)
    return figures


def _check(precisions: tuple[str, ...], stitches: tuple[str, ...], repeats: int) -> None:
    """Refuse (one line each) unknown stitch modes or precisions, and fewer than one round."""
    if repeats < 1:
        raise ConfigError(f"--repeats: got {repeats}; expected at least 1 (rounds of every run)")
    if not stitches or set(stitches) - set(STITCHES):
        raise ConfigError(f"stitches: got {stitches!r}; expected some of {STITCHES}")
    if not precisions or set(precisions) - {"float32", "bfloat16"}:
        raise ConfigError(f"--precision: got {precisions!r}; expected float32 and/or bfloat16")


def _run_plan(precisions: tuple[str, ...], stitches: tuple[str, ...]) -> list[tuple[str, str, str, str]]:
    """The predict runs of a round: (name, bundle key, stitch, precision); the near-free model in float32."""
    plan = [(f"{NEAR_FREE}_{stitch}", NEAR_FREE, stitch, "float32") for stitch in stitches]
    return plan + [(f"{precision}_{stitch}", "real", stitch, precision)
                   for precision in precisions for stitch in stitches]


def _round(root: Path, scene: Path, bundles: dict[str, Path], plan: list[tuple[str, str, str, str]], tile: int | None,
           batch_size: int, workers: int | None, threads: int, raw_tiles: int) -> dict[str, Any]:
    """One round: every predict run of ``plan`` (in its order) between two measurements of the decode ceiling and
    of the raw speed of every (model, precision); each run's roofline from the faster of the two (the machine's
    speed, on a shared machine the less disturbed one); the round's figures."""
    pairs = sorted({(key, precision) for _, key, _, precision in plan})
    decode = [decode_ceiling(scene, threads)]
    speeds = [raw_speeds(scene, bundles, pairs, tile, batch_size, raw_tiles)]
    runs = {}
    for name, key, stitch, precision in plan:
        out = root / name
        runs[name] = _pipeline_run(scene, bundles[key], out, tile, stitch, batch_size, workers, precision)
        shutil.rmtree(out)
        log.info("bench roofline: %s: %.3f Mpx/s", name, runs[name]["summary"]["mpx_per_s"])
    decode.append(decode_ceiling(scene, threads))
    speeds.append(raw_speeds(scene, bundles, pairs, tile, batch_size, raw_tiles))
    best = {pair: max(s[pair] for s in speeds) for pair in speeds[0]}
    ceiling = max(d["mpx_per_s"] for d in decode)
    return {"megapixels": decode[0]["megapixels"], "decode_mpx_per_s": ceiling,
            "decode_mpx_per_s_measured": [d["mpx_per_s"] for d in decode], "raw_mpx_per_s": best,
            "raw_mpx_per_s_measured": speeds,
            "runs": {name: run_figures(run, best[f"{key}_{precision}"], ceiling)
                     for (name, key, _, precision), run in zip(plan, runs.values())}}


def decode_ceiling(scene: Path, threads: int = 2) -> dict[str, float]:
    """How fast GDAL decodes ``scene``: every block read once (all bands), ``threads`` threads each reading its
    share of the blocks from its own dataset; {"megapixels", "seconds", "mpx_per_s"}."""
    import rasterio

    with rasterio.open(scene) as src:
        windows = [window for _, window in src.block_windows(1)]
        megapixels = src.width * src.height / 1e6
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        decoded = sum(pool.map(_decoded_pixels, [(scene, windows[k::threads]) for k in range(threads)]))
    seconds = time.perf_counter() - started
    if decoded != round(megapixels * 1e6):
        raise RuntimeError(f"decode ceiling: read {decoded} pixels of {scene}; expected {megapixels * 1e6:.0f}")
    return {"megapixels": round(megapixels, 3), "seconds": seconds, "mpx_per_s": megapixels / seconds}


def _decoded_pixels(share: tuple[Path, list[Any]]) -> int:
    """Read every window of ``share`` (a scene, its windows) once, all bands, with a small block cache; the
    pixels read."""
    import rasterio

    scene, windows = share
    pixels = 0
    with rasterio.Env(GDAL_CACHEMAX=DECODE_CACHE_MB, GDAL_NUM_THREADS=1), rasterio.open(scene) as src:
        for window in windows:
            block = src.read(window=window)
            pixels += block.shape[1] * block.shape[2]
    return pixels


def raw_speeds(scene: Path, bundles: dict[str, Path], pairs: list[tuple[str, str]], tile: int | None, batch_size: int,
               raw_tiles: int) -> dict[str, float]:
    """{"<bundle key>_<precision>": raw Mpx/s of model input} of each (bundle key, precision) of ``pairs``,
    measured one after the other in one fresh process."""
    jobs = [{"bundle": str(bundles[key]), "scene": str(scene), "tile": tile or RAW_TILE, "batch_size": batch_size,
             "raw_tiles": raw_tiles, "mode": "raw", "precision": precision} for key, precision in pairs]
    completed = subprocess.run([sys.executable, "-m", "geoseg_batch.bench_roofline", json.dumps(jobs)],
                               capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"raw model speed failed: {completed.stderr.strip().splitlines()[-1:]}")
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    return {f"{key}_{precision}": result["mpx_per_s"] for (key, precision), result in zip(pairs, results)}


def run_figures(run: dict[str, Any], raw_mpx_per_s: float, decode_mpx_per_s: float) -> dict[str, float]:
    """The figures (:data:`RUN_KEYS`) of one predict run (:func:`~geoseg_batch.bench._pipeline_run`'s result),
    given its model's raw speed and the scene's decode ceiling (Mpx/s)."""
    summary = run["summary"]
    phases, megapixels = summary["phases"], summary["megapixels"]
    per_output = 1 + summary["overlap_fraction"]
    roofline_s = megapixels * per_output / raw_mpx_per_s + megapixels / decode_mpx_per_s
    tiles = megapixels / phases["tiles_s"]
    return {"whole_mpx_per_s": summary["mpx_per_s"], "end_to_end_mpx_per_s": run["mpx_per_s"],
            "tiles_mpx_per_s": tiles, "setup_s": phases["setup_s"], "tiles_s": phases["tiles_s"],
            "cogs_s": phases["cogs_s"], "wall_s": summary["wall_s"], "model_px_per_output_px": per_output,
            "raw_mpx_per_s": raw_mpx_per_s, "roofline_s": roofline_s, "efficiency": roofline_s / summary["wall_s"],
            "tiles_efficiency": roofline_s / phases["tiles_s"],
            "whole_over_decode": summary["mpx_per_s"] / decode_mpx_per_s,
            "tiles_over_decode": tiles / decode_mpx_per_s, "peak_rss_bytes": run["peak_rss_bytes"],
            **{f"{stage}_thread_s": summary["stage_seconds"][stage] for stage in STAGES}, "tile": summary["tile"]}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds' ``runs`` of one kind."""
    return {"tile": runs[0]["tile"], **{key: statistics.median(run[key] for run in runs) for key in RUN_KEYS}}


def roofline_table(figures: dict[str, Any]) -> list[list[str]]:
    """The README's rows (figure, value) of :func:`bench_roofline`'s figures."""
    runs = figures["runs"]
    stitches = figures["stitches"]
    modes = " / ".join(stitches)
    rows = [["GDAL decode ceiling: every block of the scene read once, "
             f"{figures['decode_threads']} threads", f"{figures['decode_mpx_per_s']:.1f} Mpx/s"]]
    for stitch in stitches:
        near = runs[f"{NEAR_FREE}_{stitch}"]
        rows.append([f"predict with a near-free model (depth 1, 1 filter), {stitch}: whole run / tiles phase only",
                     f"{near['whole_mpx_per_s']:.2f} / {near['tiles_mpx_per_s']:.2f} Mpx/s "
                     f"({near['whole_over_decode']:.2f} / {near['tiles_over_decode']:.2f} of the decode ceiling; "
                     f"setup {near['setup_s']:.1f} s, COGs {near['cogs_s']:.1f} s; its own raw forward pass "
                     f"{near['raw_mpx_per_s']:.1f} Mpx/s, roofline efficiency {near['efficiency']:.2f} / "
                     f"{near['tiles_efficiency']:.2f})"])
    for precision in figures["precisions"]:
        real = [runs[f"{precision}_{stitch}"] for stitch in stitches]
        rows.append([f"predict, real model (base {figures['base_filters']}, depth {figures['depth']}, tile "
                     f"{_tiles(real)}), {precision}, {modes}",
                     " / ".join(f"{r['whole_mpx_per_s']:.2f}" for r in real) + " Mpx/s"
                     f" (raw {real[0]['raw_mpx_per_s']:.2f} Mpx/s of model input)"])
        rows.append([f"roofline efficiency, {precision}, {modes} (whole run; tiles phase)",
                     " / ".join(f"{r['efficiency']:.2f}" for r in real) + "; "
                     + " / ".join(f"{r['tiles_efficiency']:.2f}" for r in real)])
    real = [runs[f"{figures['precisions'][0]}_{stitch}"] for stitch in stitches]
    rows.append([f"model pixels computed per output pixel, {modes} (tile {_tiles(real)})",
                 " / ".join(f"{r['model_px_per_output_px']:.2f}" for r in real)])
    for name in (f"{NEAR_FREE}_{stitches[0]}", *(f"{figures['precisions'][0]}_{stitch}" for stitch in stitches)):
        rows.append([f"tiles phase, share of the workers' thread time: {' / '.join(STAGES)}, {name}",
                     _stage_shares(runs[name])])
    return rows


def _tiles(runs: list[dict[str, Any]]) -> str:
    """The tiles of ``runs`` (one per stitch mode), "1264 / 1088"."""
    return " / ".join(str(run["tile"]) for run in runs)


def _stage_shares(run: dict[str, float]) -> str:
    """"r / n / m / w (of T thread-s)": a run's stage thread-seconds as shares of their sum."""
    seconds = [run[f"{stage}_thread_s"] for stage in STAGES]
    total = sum(seconds) or 1.0
    return " / ".join(f"{s / total:.2f}" for s in seconds) + f" (of {sum(seconds):.1f} thread-s)"


def table_lines(rows: list[list[str]]) -> list[str]:
    """``rows`` as the lines of a Markdown table (figure | value)."""
    return ["| figure | value |", "|---|---|", *(f"| {figure} | {value} |" for figure, value in rows)]


if __name__ == "__main__":  # the raw speeds of one round, in one process: a JSON list of _predict_worker arguments
    worker_exit([_predict_worker(job) for job in json.loads(sys.argv[1])])
