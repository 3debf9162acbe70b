"""`geoseg-batch bench`: the benchmark subcommands' options and handlers (:data:`BENCH_COMMANDS`, registered
by :mod:`geoseg_batch.cli`). Each handler only parses and calls its bench module (:mod:`~geoseg_batch.bench`,
:mod:`~geoseg_batch.bench_roofline`, :mod:`~geoseg_batch.bench_scenes`, :mod:`~geoseg_batch.bench_backend`,
:mod:`~geoseg_batch.bench_remote`, :mod:`~geoseg_batch.bench_train_remote`, :mod:`~geoseg_batch.bench_plan`),
then prints its figures."""

from __future__ import annotations

import argparse
import json
from typing import Any, get_args

from geoseg_batch.config import Precision, StitchMode


def print_result(payload: Any) -> None:
    """Print a command's result: a mapping or list as indented JSON, anything else as it is."""
    if isinstance(payload, (dict, list)):
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(payload)


BENCH_TRAIN = (("--chips", int, 256), ("--size", int, 128), ("--bands", int, 14), ("--batch-size", int, 8),
               ("--base-filters", int, 16), ("--depth", int, 4))
BENCH_PREDICT = (("--megapixels", float, 64.0), ("--tile", int, None), ("--bands", int, 14), ("--depth", int, 4),
                 ("--base-filters", int, 16), ("--batch-size", int, 1))


def _bench_train_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, metavar="FILE")
    for name, kind, default in BENCH_TRAIN:
        parser.add_argument(name, type=kind, default=default)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaling", action="store_true", help="also: peak RSS of one epoch over N vs 4N shards")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="instead: distributed training chips/s with 1 and N workers")
    parser.add_argument("--from-s3", action="store_true",
                        help="instead: chips/s from the same shards on a moto S3 server that the bench starts on "
                             "127.0.0.1 and from the local disk, interleaved (needs moto[server], the test extra)")


def _bench_predict_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, metavar="FILE")
    for name, kind, default in BENCH_PREDICT:
        parser.add_argument(name, type=kind, default=default)
    parser.add_argument("--stitch", choices=get_args(StitchMode), default="blend")
    parser.add_argument("--workers", type=int, help="pipeline LocalCluster size (default: one per core)")
    parser.add_argument("--scaling", action="store_true", help="also run the pipeline on a quarter-size scene")
    parser.add_argument("--precision", choices=get_args(Precision), default="float32",
                        help="of raw and pipeline (naive stays float32)")
    parser.add_argument("--scene-url", metavar="URL",
                        help="instead: the pipeline on the scene at URL and on a local copy, interleaved; "
                             "'loopback': a moto S3 server on 127.0.0.1 serves the bench's scene (or --scene)")
    parser.add_argument("--scene", metavar="FILE", help="with --scene-url loopback: the scene to upload")
    parser.add_argument("--backend", choices=("tensorflow", "jax"),
                        help="instead: raw and pipeline under this Keras backend (KERAS_BACKEND of the runs and "
                             "their workers) and under TensorFlow where installed, interleaved")
    parser.add_argument("--roofline", action="store_true",
                        help="instead: the decode ceiling, predict with a near-free model and with this one (exact "
                             "and blend; float32, and --precision bfloat16 too), and each run's roofline efficiency")
    parser.add_argument("--scenes", type=int, metavar="N",
                        help="instead: one scene of --megapixels against N scenes of megapixels/N each in one run "
                             "(with --scaling also a quarter-size scene, for peak memory)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="with --scene-url, --backend, --roofline or --scenes: rounds of one run per side")


def _run_bench_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from geoseg_batch.bench import bench_train

    if args.from_s3:
        from geoseg_batch.bench_train_remote import bench_train_from_s3

        if args.workers or args.scaling:
            parser.error("--from-s3 measures one process; drop --workers and --scaling")
        figures = bench_train_from_s3(json_path=args.json, chips=args.chips, size=args.size, bands=args.bands,
                                      batch_size=args.batch_size, base_filters=args.base_filters, depth=args.depth,
                                      steps=args.steps, repeats=args.repeats)
        print_result({k: v for k, v in figures.items() if k != "runs"})
        return
    figures = bench_train(json_path=args.json, chips=args.chips, size=args.size, bands=args.bands,
                          batch_size=args.batch_size, base_filters=args.base_filters, depth=args.depth,
                          steps=args.steps, repeats=args.repeats, scaling=args.scaling, workers=args.workers)
    print_result({k: v for k, v in figures.items() if k not in ("runs", "pipeline_summary")})


def _run_bench_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from geoseg_batch.bench import bench_predict
    from geoseg_batch.bench_remote import bench_scene_url

    if args.scene and not args.scene_url:
        parser.error(f"--scene {args.scene}: only with --scene-url loopback (the scene it uploads)")
    if args.roofline:
        _run_bench_roofline(args, parser)
        return
    if args.scenes is not None:
        _run_bench_scenes(args, parser)
        return
    if args.backend:
        _run_bench_backend(args, parser)
        return
    if args.scene_url:
        figures = bench_scene_url(json_path=args.json, scene_url=args.scene_url, scene=args.scene,
                                  megapixels=args.megapixels, tile=args.tile, stitch=args.stitch, bands=args.bands,
                                  depth=args.depth, base_filters=args.base_filters, batch_size=args.batch_size,
                                  workers=args.workers, precision=args.precision, repeats=args.repeats)
        print_result({k: v for k, v in figures.items() if k != "runs"})
        return
    figures = bench_predict(json_path=args.json, megapixels=args.megapixels, tile=args.tile, stitch=args.stitch,
                            bands=args.bands, depth=args.depth, base_filters=args.base_filters,
                            batch_size=args.batch_size, workers=args.workers, scaling=args.scaling,
                            precision=args.precision)
    print_result({k: v for k, v in figures.items() if k not in ("runs", "pipeline_summary")})


def _run_bench_backend(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`bench predict --backend B`: prints the figures of :func:`~geoseg_batch.bench_backend.bench_backends`."""
    from geoseg_batch.bench_backend import bench_backends

    if args.scene_url or args.scaling:
        parser.error(f"--backend {args.backend} measures one synthetic scene; drop --scene-url and --scaling")
    figures = bench_backends(json_path=args.json, backend=args.backend, megapixels=args.megapixels, tile=args.tile,
                             stitch=args.stitch, bands=args.bands, depth=args.depth, base_filters=args.base_filters,
                             batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                             repeats=args.repeats)
    print_result({k: v for k, v in figures.items() if k != "runs"})


def _bench_plan_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, metavar="FILE")
    parser.add_argument("--side", type=int, default=100_000, help="rows and columns of the large scene's VRT")
    parser.add_argument("--scenes", type=int, default=1000, help="scenes of the many-scenes dry run (0: none)")
    parser.add_argument("--scene", metavar="FILE", help="the file the VRTs repeat (default: a synthetic 14-band one)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--stitch", choices=get_args(StitchMode), default="exact")
    parser.add_argument("--tasks", type=int, default=0, metavar="N",
                        help="also: the scheduler's cost per task of N predict-shaped no-op tasks on a LocalCluster")
    parser.add_argument("--workers", type=int, default=2, help="of the dry runs' cluster and the scheduler bench")


def _run_bench_plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from geoseg_batch.bench_plan import bench_plan

    print_result(bench_plan(json_path=args.json, side=args.side, scenes=args.scenes, scene=args.scene, tile=args.tile,
                      stitch=args.stitch, tasks=args.tasks, workers=args.workers))


def _run_bench_roofline(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`bench predict --roofline`: prints the table of :func:`~geoseg_batch.bench_roofline.bench_roofline`."""
    from geoseg_batch.bench_roofline import bench_roofline, table_lines

    if args.scene_url or args.scaling or args.backend:
        parser.error("--roofline measures one synthetic scene on this backend; drop --scene-url, --scaling and "
                     "--backend")
    precisions = ("float32", "bfloat16") if args.precision == "bfloat16" else ("float32",)
    figures = bench_roofline(json_path=args.json, megapixels=args.megapixels, tile=args.tile, bands=args.bands,
                             depth=args.depth, base_filters=args.base_filters, batch_size=args.batch_size,
                             workers=args.workers, precisions=precisions, repeats=args.repeats)
    print("\n".join(table_lines(figures["table"])))


def _run_bench_scenes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`bench predict --scenes N`: prints the table of :func:`~geoseg_batch.bench_scenes.bench_scenes`."""
    from geoseg_batch.bench_roofline import table_lines
    from geoseg_batch.bench_scenes import bench_scenes, scenes_table

    if args.scene_url or args.backend:
        parser.error(f"--scenes {args.scenes} measures synthetic scenes on this backend; drop --scene-url and "
                     "--backend")
    figures = bench_scenes(json_path=args.json, megapixels=args.megapixels, scenes=args.scenes, tile=args.tile,
                           stitch=args.stitch, bands=args.bands, depth=args.depth, base_filters=args.base_filters,
                           batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                           repeats=args.repeats, scaling=args.scaling)
    print("\n".join(table_lines(scenes_table(figures))))


BENCH_COMMANDS = {
    "train": ("chips/s and peak RSS: shards vs in-memory NumPy", _bench_train_parser, _run_bench_train),
    "predict": ("Mpx/s and peak RSS: raw model vs naive vs pipeline", _bench_predict_parser, _run_bench_predict),
    "plan": ("client RSS and time of dry runs of very large runs; scheduler cost per task",
             _bench_plan_parser, _run_bench_plan),
}
"""bench's subcommands: name -> (help, parser builder, handler), as :data:`geoseg_batch.cli.COMMANDS`."""
