"""`geoseg-batch`: parse arguments, build the job the options describe, delegate.

Subcommands only parse and call the Python API (:mod:`geoseg_batch.api`); options map
onto the job schema's dotted keys, so a CLI run and the equivalent YAML job are the same
job. Errors: one line on stderr (the last line), exit 2 for bad input or usage, 1 for a
failure during the run; tracebacks only with --debug. Library logs and TensorFlow's start-up
lines go to a log file beside the output directory (:mod:`geoseg_batch.logs`), and also to stderr
with -v/--verbose.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from geoseg_batch import logs
from geoseg_batch.config import (LossName, MergeRule, ModelType, Precision, ResamplingMethod, SplitName,
                                 StitchMode)
from geoseg_batch.errors import GeosegError

PROG = "geoseg-batch"


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--scheduler", metavar="ADDR", help="address of an existing Dask scheduler")
    target.add_argument("--workers", type=int, metavar="N", help="embedded LocalCluster size (default: one per core)")


def _store_options(parser: argparse.ArgumentParser, incremental: str) -> None:
    """Options of the commands that write zarr + COGs (predict, mosaic), and the cluster options."""
    parser.add_argument("--zarr-format", type=int, choices=(2, 3))
    parser.add_argument("--no-cog", dest="cog", action="store_false", default=None, help="zarr only")
    parser.add_argument("--incremental", action="store_true", default=None, help=incremental)
    parser.add_argument("--overwrite", action="store_true", default=None)
    _cluster_options(parser)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.path": args.data, "out": args.out, "data.fill_nan": args.fill_nan, "data.resolution_m": args.resolution_m,
        "model.model_type": args.model_type, "model.depth": args.depth, "model.base_filters": args.base_filters,
        "model.input_size": args.input_size,
        "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.learning_rate": args.learning_rate,
        "train.loss": args.loss, "train.patience": args.patience, "train.seed": args.seed,
        "cluster.scheduler": args.scheduler, "cluster.workers": args.workers, "cluster.train_workers": args.train_workers,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Segment scenes of any size with a U-Net, on Dask.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only warnings and results")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="library logs (TensorFlow, Dask...) on stderr too, not only in the run's log file")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="the main job: synthetic data -> shards -> train -> evaluate -> predict")
    demo.add_argument("--out", default=None, help="output directory (default: demo_out)")
    _cluster_options(demo)

    synth = commands.add_parser("synth", help="synthetic Landslide4Sense chips and georeferenced scenes")
    synth.add_argument("--out", required=True)
    synth.add_argument("--chips", type=int, default=200)
    synth.add_argument("--bands", type=int, default=14)
    synth.add_argument("--size", type=int, default=128)
    synth.add_argument("--scenes", type=int, default=2)
    synth.add_argument("--seed", type=int, default=0)

    shards = commands.add_parser("shards", help="pack, inspect and summarize HDF5 shards")
    shard_commands = shards.add_subparsers(dest="shards_command", required=True, metavar="ACTION")
    pack = shard_commands.add_parser("pack", help="validate chips and pack them into shards")
    pack.add_argument("src", help="Landslide4Sense directory (img/, mask/) or shards to repack")
    pack.add_argument("out")
    pack.add_argument("--chips-per-shard", type=int, default=256)
    pack.add_argument("--fill-nan", type=float, metavar="V", help="replace NaN/inf pixels with V instead of failing")
    pack.add_argument("--compression", default="blosc", choices=("blosc", "gzip", "lzf", "none"),
                      help="blosc (LZ4, byte shuffle; default: fastest to read), gzip, lzf or none")
    pack.add_argument("--overwrite", action="store_true")
    _cluster_options(pack)
    info = shard_commands.add_parser("info", help="index of a shard directory or file")
    info.add_argument("path")
    stats = shard_commands.add_parser("stats", help="per-band mean/std/min/max with Dask (saved as stats.json)")
    stats.add_argument("path")
    _cluster_options(stats)

    train = commands.add_parser("train", help="train a U-Net / Attention U-Net (one run or a sweep)")
    train.add_argument("job", nargs="?", help="train job YAML (options below override it)")
    train.add_argument("--data", help="Landslide4Sense directory or shard directory")
    train.add_argument("--out")
    train.add_argument("--model-type", choices=get_args(ModelType))
    train.add_argument("--epochs", type=int)
    train.add_argument("--base-filters", type=int)
    train.add_argument("--depth", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--loss", choices=get_args(LossName))
    train.add_argument("--patience", type=int)
    train.add_argument("--input-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--fill-nan", type=float, metavar="V")
    train.add_argument("--resolution-m", type=float, metavar="M",
                       help="the chips' ground sampling distance in metres, recorded for predict --resample")
    _cluster_options(train)
    train.add_argument("--train-workers", type=int, metavar="N",
                       help="with --scheduler: how many of its workers each run a training process (default: all)")

    evaluate = commands.add_parser("evaluate", help="metrics, confusion matrix, PR curve and samples of a bundle")
    evaluate.add_argument("--model", required=True, help="model bundle (.keras)")
    evaluate.add_argument("--data", required=True, help="Landslide4Sense directory or shard directory")
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--split", choices=get_args(SplitName),
                          help="all chips (default) or the bundle's own split")
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--fill-nan", type=float, metavar="V")
    evaluate.add_argument("--precision", choices=get_args(Precision),
                          help="forward-pass precision (default float32): evaluate with bfloat16 to see its cost")

    predict = commands.add_parser("predict", help="segment scenes tile by tile on Dask: zarr + COGs per scene")
    predict.add_argument("scenes", nargs="*", metavar="SCENE", help="GeoTIFF/COG scenes or quoted glob patterns")
    predict.add_argument("--scene-list", metavar="FILE", help="a text file of scene paths, one per line")
    predict.add_argument("--model", required=True, help="model bundle (.keras)")
    predict.add_argument("--out", required=True)
    predict.add_argument("--stitch", choices=get_args(StitchMode), help="exact (default): equals a whole-scene pass")
    predict.add_argument("--tile", type=int, help="tile size, a multiple of the model's 2**depth (default 512)")
    predict.add_argument("--overlap", type=int, help="blend overlap in pixels (default: half the receptive radius)")
    predict.add_argument("--batch-size", type=int, help="tiles per forward pass (default 1; raise it on GPUs)")
    predict.add_argument("--bands", help="comma-separated band names or 1-based numbers, in the model's order")
    predict.add_argument("--nodata", type=float, help="nodata value when the file has none")
    predict.add_argument("--resample", action="store_true", default=None,
                         help="resample scenes to the bundle's training resolution first")
    predict.add_argument("--resampling", choices=get_args(ResamplingMethod),
                         help="--resample's kernel (default bilinear): the one the training data was resampled with")
    predict.add_argument("--precision", choices=get_args(Precision),
                         help="forward-pass precision (default float32); bfloat16: 2-3x faster on CPUs with "
                              "AVX512-BF16/AMX and on GPUs, probabilities a few hundredths off")
    predict.add_argument("--float", dest="float_output", action="store_true", default=None,
                         help="float32 probabilities (default uint8 0..250)")
    predict.add_argument("--polygons", action="store_true", default=None,
                         help="also SCENE_polygons.gpkg: one feature per connected region, with area and mean "
                              "probability")
    _store_options(predict, incremental="keep unchanged scenes' outputs from the last run; predict new or changed "
                                         "ones only")

    mosaic = commands.add_parser("mosaic", help="many scenes' predictions onto one grid: zarr + COGs")
    mosaic.add_argument("predictions", nargs="+", metavar="PREDICTION_DIR", help="predict output directories")
    mosaic.add_argument("--out", required=True)
    mosaic.add_argument("--crs", help="target CRS, e.g. EPSG:32633 (default: the first scene's)")
    mosaic.add_argument("--resolution", type=float, help="pixel size in target CRS units (default: the finest)")
    mosaic.add_argument("--bounds", type=float, nargs=4, metavar=("LEFT", "BOTTOM", "RIGHT", "TOP"),
                        help="target bounds in target CRS units (default: the union of the scenes)")
    mosaic.add_argument("--merge", choices=get_args(MergeRule),
                        help="max (default): most confident scene; first: first given; mean: edge-distance weighted")
    mosaic.add_argument("--chunk", type=int, help="chunk and COG block size in pixels (default 512)")
    _store_options(mosaic, incremental="rewrite only chunks touched by new, changed or removed scenes since the "
                                       "last run")

    validate = commands.add_parser("validate", help="check a job file without touching a cluster")
    validate.add_argument("job")
    submit = commands.add_parser("submit", help="run any job file")
    submit.add_argument("job")
    _cluster_options(submit)

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bench_train = bench_commands.add_parser("train", help="chips/s and peak RSS: shards vs in-memory NumPy")
    bench_train.add_argument("--json", required=True, metavar="FILE")
    bench_train.add_argument("--chips", type=int, default=256)
    bench_train.add_argument("--size", type=int, default=128)
    bench_train.add_argument("--bands", type=int, default=14)
    bench_train.add_argument("--batch-size", type=int, default=8)
    bench_train.add_argument("--base-filters", type=int, default=16)
    bench_train.add_argument("--depth", type=int, default=4)
    bench_train.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    bench_train.add_argument("--repeats", type=int, default=3)
    bench_train.add_argument("--scaling", action="store_true",
                             help="also: peak RSS of one epoch over N vs 4N shards")
    bench_train.add_argument("--workers", type=int, metavar="N",
                             help="instead: distributed training chips/s with 1 and N workers")

    bench_predict = bench_commands.add_parser("predict", help="Mpx/s and peak RSS: raw model vs naive vs pipeline")
    bench_predict.add_argument("--json", required=True, metavar="FILE")
    bench_predict.add_argument("--megapixels", type=float, default=64.0)
    bench_predict.add_argument("--tile", type=int, default=512)
    bench_predict.add_argument("--stitch", choices=get_args(StitchMode), default="blend")
    bench_predict.add_argument("--bands", type=int, default=14)
    bench_predict.add_argument("--depth", type=int, default=4)
    bench_predict.add_argument("--base-filters", type=int, default=16)
    bench_predict.add_argument("--batch-size", type=int, default=1)
    bench_predict.add_argument("--workers", type=int, help="pipeline LocalCluster size (default: one per core)")
    bench_predict.add_argument("--scaling", action="store_true", help="also run the pipeline on a quarter-size scene")
    bench_predict.add_argument("--precision", choices=get_args(Precision), default="float32",
                               help="of raw and pipeline (naive stays float32)")

    commands.add_parser("info", help="versions, devices, cluster reachability").add_argument(
        "--scheduler", metavar="ADDR", help="also check this scheduler answers")
    return parser


def _print(payload: Any) -> None:
    if isinstance(payload, (dict, list)):
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(payload)


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parsed command; returns the exit code."""
    from geoseg_batch import api

    command = args.command
    if command == "demo":
        result = api.demo(out=args.out, scheduler=args.scheduler, workers=args.workers)
        print(f"bundle: {result.outputs[0]['bundle']}")
        print(f"report: {result.outputs[0]['report']}")
        if result.outputs[0]["predictions"]:
            scores = ", ".join(f"{k} F1 {v:.3f}" for k, v in result.summary["scene_f1"].items())
            print(f"predictions: {result.outputs[0]['predictions']} ({scores})")
            print(f"mosaic: {result.outputs[0]['mosaic']}")
        print(f"manifest: {result.manifest}")
    elif command == "synth":
        result = api.synth(args.out, chips=args.chips, bands=args.bands, size=args.size, scenes=args.scenes,
                           seed=args.seed)
        print(f"chips: {result.chips_dir}")
        for scene in result.scenes:
            print(f"scene: {scene}")
    elif command == "shards":
        if args.shards_command == "pack":
            result = api.pack_shards(args.src, args.out, chips_per_shard=args.chips_per_shard, fill_nan=args.fill_nan,
                                     compression=args.compression, overwrite=args.overwrite,
                                     scheduler=args.scheduler, workers=args.workers)
            print(f"packed {result.chips} chips into {result.shards} shards: {result.out}")
            print(f"stats: {result.stats}")
        elif args.shards_command == "info":
            _print(api.shard_info(args.path))
        else:
            _print(api.shard_stats(args.path, scheduler=args.scheduler, workers=args.workers).to_dict())
    elif command == "train":
        if args.job is None and args.data is None:
            parser.error("train needs a job file or --data PATH")
        result = api.train(job=args.job, **_train_overrides(args))
        for output in result.outputs:
            print(f"bundle: {output['bundle']}")
        print(f"manifest: {result.manifest}")
    elif command == "evaluate":
        result = api.evaluate(model=args.model, data=args.data, out=args.out, split=args.split,
                              batch_size=args.batch_size, fill_nan=args.fill_nan, precision=args.precision)
        _print({k: round(v, 4) for k, v in result.summary.items()})
        print(f"metrics: {result.outputs[0]['metrics']}")
    elif command == "predict":
        bands = [int(b) if b.strip().isdigit() else b.strip() for b in args.bands.split(",")] if args.bands else None
        if not args.scenes and not args.scene_list:
            parser.error("predict needs SCENE arguments or --scene-list FILE")
        result = api.predict_scene(args.scenes, args.model, args.out, scene_list=args.scene_list,
                                   incremental=args.incremental, stitch=args.stitch, tile=args.tile,
                                   overlap=args.overlap, batch_size=args.batch_size, bands=bands, nodata=args.nodata,
                                   resample=args.resample, resampling=args.resampling,
                                   precision=args.precision,
                                   float_output=args.float_output, zarr_format=args.zarr_format, cog=args.cog,
                                   polygons=args.polygons, overwrite=args.overwrite, scheduler=args.scheduler,
                                   workers=args.workers)
        for output in result.outputs:
            print(f"{output['scene']}: {output.get('mask_cog') or output['zarr']}")
        summary = result.summary
        print(f"{summary['megapixels']} Mpx, {summary['tiles_computed']}/{summary['tiles_total']} tiles computed, "
              f"{summary['mpx_per_s']} Mpx/s")
        print(f"manifest: {result.manifest}")
    elif command == "mosaic":
        result = api.mosaic(args.predictions, args.out, crs=args.crs, resolution=args.resolution,
                            bounds=tuple(args.bounds) if args.bounds else None, merge=args.merge, chunk=args.chunk,
                            zarr_format=args.zarr_format, cog=args.cog, incremental=args.incremental,
                            overwrite=args.overwrite, scheduler=args.scheduler, workers=args.workers)
        output = result.outputs[0]
        print(f"mosaic: {output.get('mask_cog') or output['zarr']}")
        summary = result.summary
        print(f"{summary['megapixels']} Mpx, {summary['chunks_written']}/{summary['chunks_total']} chunks written "
              f"from {summary['scenes']} scenes")
        print(f"manifest: {result.manifest}")
    elif command == "validate":
        job = api.validate(args.job)
        print(f"ok: {job.kind} job {job.name!r} ({args.job})")
    elif command == "submit":
        result = api.submit(args.job, scheduler=args.scheduler, workers=args.workers)
        print(f"manifest: {result.manifest}")
    elif command == "bench":
        from geoseg_batch.bench import bench_predict, bench_train

        if args.bench_command == "train":
            figures = bench_train(json_path=args.json, chips=args.chips, size=args.size, bands=args.bands,
                                  batch_size=args.batch_size, base_filters=args.base_filters, depth=args.depth,
                                  steps=args.steps, repeats=args.repeats, scaling=args.scaling,
                                  workers=args.workers)
        else:
            figures = bench_predict(json_path=args.json, megapixels=args.megapixels, tile=args.tile,
                                    stitch=args.stitch, bands=args.bands, depth=args.depth,
                                    base_filters=args.base_filters, batch_size=args.batch_size,
                                    workers=args.workers, scaling=args.scaling, precision=args.precision)
        _print({k: v for k, v in figures.items() if k not in ("runs", "pipeline_summary")})
    elif command == "info":
        _print(api.info(scheduler=args.scheduler))
    return 0


def _configure_logging(args: argparse.Namespace) -> contextlib.AbstractContextManager[Path | None]:
    """Logging for the run (:func:`geoseg_batch.logs.run_logging`): yields the log file (or None)."""
    return logs.run_logging(logs.run_out(args), verbose=args.verbose, debug=args.debug, quiet=args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `geoseg-batch` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _configure_logging(args) as log_path:
        try:
            return dispatch(args, parser)
        except GeosegError as exc:
            if args.debug:
                raise
            print(f"{PROG}: error: {exc}{logs.log_pointer(log_path)}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # the promise is one line, not a traceback
            if args.debug:
                raise
            print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
                  f"{logs.log_pointer(log_path)}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
