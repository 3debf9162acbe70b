"""``bench predict --scene-url``: the same scene predicted from object storage and from the local disk, side by side.

One run, the two sides interleaved (remote, local, local, remote, ...) over ``repeats``
rounds, each a fresh ``geoseg-batch predict`` subprocess on an embedded LocalCluster, so
both see the same machine. The figure is the median of each side's Mpx/s (the run's own
``mpx_per_s``; end to end beside it) and their ratio remote/local. ``--scene-url loopback``
starts moto's S3 server on 127.0.0.1 (a free port) in this process, uploads the scene
(``--scene``, or the bench's synthetic one) and reads it back from there, with fake keys
given only to the bench's subprocesses; the bytes and GET requests that server served
per run are reported. Any other URL is read with the standard AWS chain, its local copy
downloaded once. Both sides must produce the same mask (its digest is compared).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geoseg_batch.bench import _bench_bundle, _bench_scene, _pipeline_run
from geoseg_batch.errors import ConfigError
from geoseg_batch.io.publish import write_json
from geoseg_batch.io.urls import fsspec_path, is_url, split

LOOPBACK = "loopback"


def bench_scene_url(json_path: str | Path, scene_url: str, scene: str | Path | None = None,
                    megapixels: float = 16.0, tile: int = 512, stitch: str = "blend", bands: int = 14,
                    depth: int = 4, base_filters: int = 16, batch_size: int = 1, workers: int | None = None,
                    precision: str = "float32", repeats: int = 3) -> dict[str, Any]:
    """Remote vs local predict of one scene (medians over ``repeats`` interleaved rounds); the figures, also
    written to ``json_path``. ``scene_url``: an s3:// (or other GDAL-readable) URL, or ``"loopback"``."""
    if scene_url != LOOPBACK and not is_url(scene_url):
        raise ConfigError(f"--scene-url: got {scene_url!r}; expected a URL such as s3://bucket/scene.tif, or "
                          f"{LOOPBACK!r} for a moto S3 server started on 127.0.0.1 by the bench")
    if scene is not None and scene_url != LOOPBACK:
        raise ConfigError(f"--scene: got {scene}, given with --scene-url {scene_url}; --scene is the file the "
                          f"bench uploads with --scene-url {LOOPBACK} (the local copy of a URL is downloaded)")
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-url-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        if scene_url == LOOPBACK:
            local = Path(scene) if scene is not None else _bench_scene(root / "scene.tif", megapixels, bands, seed=5)
            store = stack.enter_context(_loopback())
            url, env = store.upload(local), {**_without_aws(os.environ), **store.environment}
        else:
            store, url, env = None, scene_url, dict(os.environ)
            local = _download(scene_url, root / "local" / Path(fsspec_path(scene_url)).name)
        layout = _layout(local)
        bundle = _bench_bundle(root / "model.keras", layout["bands"], depth, base_filters)
        settings = {"tile": tile, "stitch": stitch, "batch_size": batch_size, "workers": workers,
                    "precision": precision}
        runs = [_one_run(side, url if side == "remote" else local, bundle, root / f"out_{n}", settings, env, store)
                for n, side in enumerate(_interleaved(repeats))]
    figures = {"scene_url": url if store is None else f"{LOOPBACK} (moto on 127.0.0.1) {url}", **layout,
               **settings, "depth": depth, "base_filters": base_filters, "repeats": repeats,
               **_medians(runs), "runs": runs}
    write_json(json_path, figures)
    return figures


def _interleaved(repeats: int) -> list[str]:
    """The sides in run order: remote/local, then local/remote, ... (``repeats`` rounds)."""
    if repeats < 1:
        raise ConfigError(f"--repeats: got {repeats}; expected at least 1 (rounds of one remote and one local run)")
    return [side for n in range(repeats) for side in (("remote", "local") if n % 2 == 0 else ("local", "remote"))]


@contextlib.contextmanager
def _loopback() -> Iterator[Any]:
    """The loopback S3 store (:func:`geoseg_batch.io.loopback.loopback_store`); a one-line error without moto."""
    try:
        from geoseg_batch.io.loopback import loopback_store
    except ImportError as exc:
        raise ConfigError(f"--scene-url {LOOPBACK}: needs moto[server] (the test extra), which is not installed "
                          f"({exc}); pip install 'moto[server]>=5', or give an s3:// URL") from None
    with loopback_store() as store:
        yield store


def _without_aws(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """``environ`` less the AWS chain's variables (the loopback side sets its own; no real key reaches it)."""
    from geoseg_batch.io.remote import AWS_ENVIRONMENT

    return {k: v for k, v in environ.items() if k not in AWS_ENVIRONMENT}


def _download(url: str, path: Path) -> Path:
    """The object at ``url`` copied to ``path`` (the local side's same bytes)."""
    from geoseg_batch.io.remote import CloudSettings, object_info

    settings = CloudSettings.of()
    object_info(url, settings)  # a missing key or refused credentials: the store's one-line error
    path.parent.mkdir(parents=True)
    settings.filesystem(split(url)[0]).get_file(fsspec_path(url), str(path))
    return path


def _layout(path: Path) -> dict[str, Any]:
    """What the figures say of the scene: name, size, bands, dtype, block shape, compression, bytes."""
    import rasterio

    with rasterio.open(path) as src:
        return {"scene": path.name, "megapixels": round(src.width * src.height / 1e6, 3),
                "shape": [src.height, src.width], "bands": src.count, "dtype": src.dtypes[0],
                "block_shape": list(src.block_shapes[0]), "compression": str(src.compression.value
                                                                           if src.compression else None),
                "scene_bytes": path.stat().st_size}


def _one_run(side: str, scene: Path | str, bundle: Path, out: Path, settings: dict[str, Any],
             env: dict[str, str], store: Any) -> dict[str, Any]:
    """One predict of ``scene``: its speeds, the digest of its mask and, from the loopback store, what it fetched."""
    before = store.served(Path(fsspec_path(str(scene))).name) if store and side == "remote" else None
    run = _pipeline_run(scene, bundle, out, settings["tile"], settings["stitch"], settings["batch_size"],
                        settings["workers"], settings["precision"], env=env)
    figures = {"side": side, "mpx_per_s": run["summary"]["mpx_per_s"], "end_to_end_mpx_per_s": run["mpx_per_s"],
               "wall_s": run["summary"]["wall_s"], "peak_rss_bytes": run["peak_rss_bytes"],
               "mask_sha256": _mask_digest(out)}
    if before is not None:
        after = store.served(Path(fsspec_path(str(scene))).name)
        figures["bytes_fetched"], figures["get_requests"] = after[0] - before[0], after[1] - before[1]
    shutil.rmtree(out)
    return figures


def _mask_digest(out: Path) -> str:
    """SHA-256 of the mask array of the one zarr store a predict wrote under ``out``."""
    import numpy as np
    import zarr

    (store,) = out.glob("*.zarr")
    return hashlib.sha256(np.ascontiguousarray(zarr.open_group(str(store), mode="r")["mask"][...])).hexdigest()


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each side's median speeds, the ratio remote/local (overall and per round), fetched bytes, and whether
    every run wrote the same mask."""
    side = {name: [r for r in runs if r["side"] == name] for name in ("remote", "local")}
    figures: dict[str, Any] = {}
    for name, mine in side.items():
        figures[f"{name}_mpx_per_s"] = statistics.median(r["mpx_per_s"] for r in mine)
        figures[f"{name}_end_to_end_mpx_per_s"] = statistics.median(r["end_to_end_mpx_per_s"] for r in mine)
    figures["remote_over_local"] = figures["remote_mpx_per_s"] / figures["local_mpx_per_s"]
    figures["ratios_per_round"] = [round(r["mpx_per_s"] / l["mpx_per_s"], 4) for r, l in zip(*side.values())]
    if "bytes_fetched" in side["remote"][0]:
        figures["bytes_fetched_per_run"] = statistics.median(r["bytes_fetched"] for r in side["remote"])
        figures["get_requests_per_run"] = statistics.median(r["get_requests"] for r in side["remote"])
    figures["masks_equal"] = len({r["mask_sha256"] for r in runs}) == 1
    return figures
