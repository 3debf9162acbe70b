"""``bench train --from-s3``: training chips/s from the same shards read from object storage and from the local disk.

One run: the bench packs synthetic shards, starts moto's S3 server on 127.0.0.1 (a free port;
:func:`geoseg_batch.io.loopback.loopback_store`) in this process, uploads the shard directory
and then alternates (s3, local, local, s3, ...) over ``repeats`` rounds, each side a fresh
subprocess streaming the shards through :func:`~geoseg_batch.data.pipeline.chip_dataset` into
the same model (:func:`geoseg_batch.bench._worker`, mode ``shards``); the S3 side gets the
loopback store's fake keys and endpoint in its environment, never this process's AWS
variables. Reported: each side's median chips/s and peak RSS, the ratio S3/local (overall and
per round) and the bytes and GET requests the server served per S3 run. moto is in the test
extra; without it the bench says so in one line.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from geoseg_batch.bench import _in_subprocess, _make_shards
from geoseg_batch.bench_remote import _without_aws
from geoseg_batch.errors import ConfigError
from geoseg_batch.io.publish import write_json

PREFIX = "bench/shards"  # where the shards go in the loopback bucket


def bench_train_from_s3(json_path: str | Path, chips: int = 256, size: int = 128, bands: int = 14,
                        batch_size: int = 8, base_filters: int = 16, depth: int = 4, steps: int = 60,
                        repeats: int = 3) -> dict[str, Any]:
    """Chips/s of training from shards on a loopback S3 server vs the same shards on disk (medians of
    ``repeats`` interleaved rounds); the figures, also written to ``json_path``."""
    if repeats < 1:
        raise ConfigError(f"--repeats: got {repeats}; expected at least 1 (rounds of one S3 and one local run)")
    try:
        from geoseg_batch.io.loopback import loopback_store
    except ImportError as exc:
        raise ConfigError(f"--from-s3: needs moto[server] (the test extra), which is not installed ({exc}); "
                          "pip install 'moto[server]>=5'") from None
    common = {"batch_size": batch_size, "base_filters": base_filters, "depth": depth, "steps": steps, "warmup": 5,
              "mode": "shards"}
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-s3-") as tmp, loopback_store() as store:
        shards = _make_shards(Path(tmp), chips, size, bands, 32, seed=1)
        keys = [f"{PREFIX}/{path.name}" for path in sorted(shards.iterdir())]
        for key in keys:
            store.upload(shards / Path(key).name, key)
        sides = {"s3": (f"s3://{store.bucket}/{PREFIX}", {**_without_aws(os.environ), **store.environment}),
                 "local": (str(shards), None)}
        runs = []
        for number in range(repeats):
            for side in ("s3", "local") if number % 2 == 0 else ("local", "s3"):
                before = _served(store, keys)
                data, env = sides[side]
                run = {"side": side, **_in_subprocess("train", {**common, "data": data}, env)}
                if side == "s3":
                    run["bytes_fetched"], run["get_requests"] = (a - b for a, b in zip(_served(store, keys), before))
                runs.append(run)
        shard_bytes = sum((shards / Path(key).name).stat().st_size for key in keys)
    figures = {"chips": chips, "chip_size": size, "bands": bands, **common, "repeats": repeats,
               "shards": len([k for k in keys if k.endswith(".h5")]), "shard_bytes": shard_bytes,
               "s3": f"moto on 127.0.0.1, {sides['s3'][0]}", **_medians(runs), "runs": runs}
    write_json(json_path, figures)
    return figures


def _served(store: Any, keys: list[str]) -> tuple[int, int]:
    """(bytes, GET requests) the loopback store has served for ``keys`` so far."""
    counts = [store.served(key) for key in keys]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each side's median chips/s and peak RSS, the ratio S3/local (overall and per round), bytes per S3 run."""
    side = {name: [r for r in runs if r["side"] == name] for name in ("s3", "local")}
    figures = {f"{name}_{metric}": statistics.median(r[metric] for r in side[name])
               for name in side for metric in ("chips_per_s", "peak_rss_bytes")}
    figures.update({f"{metric}_per_run": statistics.median(r[metric] for r in side["s3"])
                    for metric in ("bytes_fetched", "get_requests")})
    figures["s3_over_local"] = figures["s3_chips_per_s"] / figures["local_chips_per_s"]
    figures["ratios_per_round"] = [round(s["chips_per_s"] / l["chips_per_s"], 4) for s, l in zip(*side.values())]
    return figures
