"""Benchmarks that print figures (never timed tests).

``bench train``: training throughput (chips/s) and peak RSS when the same model, batch
size and transforms are fed (a) from HDF5 shards streamed by :func:`chip_dataset` and (b)
from NumPy arrays held in memory (:func:`array_dataset`, the notebook way). Every
measurement runs in a fresh subprocess, so its peak RSS is its own; the two modes
alternate over ``repeats`` rounds and medians are reported, because this machine is
shared and noisy. With ``scaling``, one epoch is also streamed over N and over 4N shards
to show that memory does not grow with the dataset.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from geoseg_batch.io.publish import write_json


def _worker(args: dict[str, Any]) -> dict[str, Any]:
    """Runs inside the subprocess: build model + pipeline, time steps, report chips/s and peak RSS."""
    import resource

    from geoseg_batch.runtime import configure_tensorflow

    configure_tensorflow()
    import keras
    import numpy as np

    from geoseg_batch.data.chips import iter_chips, open_chips
    from geoseg_batch.data.pipeline import Transform, array_dataset, chip_dataset
    from geoseg_batch.data.stats import load_stats
    from geoseg_batch.model.unet import build_model
    from geoseg_batch.training.fit import _Loop

    collection = open_chips(args["data"])
    stats = load_stats(Path(args["data"]) / "stats.json")
    transform = Transform.from_stats(stats, augment=True, jitter=0.05)
    batch = args["batch_size"]
    if args["mode"] == "numpy":
        pairs = list(iter_chips(collection))
        images, masks = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        dataset = array_dataset(images, masks, transform, batch_size=batch, shuffle=True)
    else:
        dataset = chip_dataset(collection, transform, batch_size=batch, shuffle=True)
    model = build_model("unet", bands=collection.bands, depth=args["depth"], base_filters=args["base_filters"], seed=0)
    optimizer = keras.optimizers.Adam(1e-3)
    loop = _Loop(model, optimizer, "bce_dice", 2, 0.5)
    if args.get("epoch"):
        started, chips = time.perf_counter(), 0
        for x, y in dataset:
            loop.train_step(x, y)
            chips += int(x.shape[0])
    else:
        stream = iter(dataset.repeat())
        for _ in range(args["warmup"]):
            loop.train_step(*next(stream))
        started = time.perf_counter()
        for _ in range(args["steps"]):
            loss, _ = loop.train_step(*next(stream))
        float(loss)  # wait for the last step
        chips = args["steps"] * batch
    seconds = time.perf_counter() - started
    return {"mode": args["mode"], "chips": chips, "seconds": seconds, "chips_per_s": chips / seconds,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _measure(args: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run([sys.executable, "-m", "geoseg_batch.bench", json.dumps(args)],
                               capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"benchmark worker failed: {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _make_shards(root: Path, chips: int, size: int, bands: int, chips_per_shard: int, seed: int) -> Path:
    from geoseg_batch.data.pack import pack_shards
    from geoseg_batch.data.synthetic import write_l4s_chips

    source = write_l4s_chips(root / f"chips_{chips}", chips=chips, bands=bands, size=size, seed=seed)
    return pack_shards(source, root / f"shards_{chips}", chips_per_shard=chips_per_shard).out


def bench_train(json_path: str | Path, chips: int = 256, size: int = 128, bands: int = 14, batch_size: int = 8,
                base_filters: int = 16, depth: int = 4, steps: int = 60, repeats: int = 3,
                scaling: bool = False) -> dict[str, Any]:
    """Shards vs in-memory chips/s and peak RSS (medians of ``repeats``); optionally RSS scaling N vs 4N shards."""
    common = {"batch_size": batch_size, "base_filters": base_filters, "depth": depth, "steps": steps, "warmup": 5}
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as tmp:
        shards = _make_shards(Path(tmp), chips, size, bands, 32, seed=1)
        runs = []
        for round_number in range(repeats):
            modes = ("numpy", "shards") if round_number % 2 == 0 else ("shards", "numpy")
            runs.extend(_measure({**common, "mode": mode, "data": str(shards)}) for mode in modes)
        figures: dict[str, Any] = {"chips": chips, "chip_size": size, "bands": bands, **common, "repeats": repeats}
        for mode in ("numpy", "shards"):
            mine = [r for r in runs if r["mode"] == mode]
            figures[f"{mode}_chips_per_s"] = statistics.median(r["chips_per_s"] for r in mine)
            figures[f"{mode}_peak_rss_bytes"] = statistics.median(r["peak_rss_bytes"] for r in mine)
        figures["shards_over_numpy"] = figures["shards_chips_per_s"] / figures["numpy_chips_per_s"]
        rounds = [{r["mode"]: r["chips_per_s"] for r in runs[i:i + 2]} for i in range(0, len(runs), 2)]
        figures["ratios_per_round"] = [r["shards"] / r["numpy"] for r in rounds]
        if scaling:
            large = _make_shards(Path(tmp), chips * 4, size, bands, 32, seed=2)
            epochs = [_measure({**common, "mode": "shards", "data": str(path), "epoch": True})
                      for _ in range(max(1, repeats // 2)) for path in (shards, large)]
            small_rss = statistics.median(e["peak_rss_bytes"] for e in epochs[0::2])
            large_rss = statistics.median(e["peak_rss_bytes"] for e in epochs[1::2])
            figures["scaling"] = {"shards_small": chips // 32, "shards_large": chips * 4 // 32,
                                  "epoch_peak_rss_small_bytes": small_rss, "epoch_peak_rss_large_bytes": large_rss,
                                  "growth": large_rss / small_rss - 1}
        figures["runs"] = runs
    write_json(json_path, figures)
    return figures


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
