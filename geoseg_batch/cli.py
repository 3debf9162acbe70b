"""`geoseg-batch`: parse arguments, build the job the options describe, delegate.

Subcommands only parse and call the Python API (:mod:`geoseg_batch.api`), each by its handler
in :data:`COMMANDS`. The job commands' options are derived from the job schema
(:mod:`geoseg_batch.options`: one flag per field, mapped onto its dotted key), so a CLI run and
the equivalent YAML job are the same job. Errors: one line on stderr (the last line), exit 2 for
bad input or usage, 1 for a failure during the run; tracebacks only with --debug. Library logs
and TensorFlow's start-up lines go to a log file beside the output directory
(:mod:`geoseg_batch.logs`), and also to stderr with -v/--verbose.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from geoseg_batch import api, logs
from geoseg_batch.config import ClusterSpec, DemoJob, EvaluateJob, MosaicJob, PredictJob, Spec, TrainJob
from geoseg_batch.errors import GeosegError
from geoseg_batch.bench_cli import BENCH_COMMANDS, print_result
from geoseg_batch.options import add_options, given, job_options

PROG = "geoseg-batch"


def _cluster_target(parser: argparse.ArgumentParser) -> None:
    """--scheduler ADDR | --workers N, from the cluster spec, for the commands that are not job models."""
    add_options(parser, tuple(o for o in job_options(ClusterSpec) if o.name in ("scheduler", "workers")))


def _job_parser(model: type[Spec]) -> Callable[[argparse.ArgumentParser], None]:
    """Builder of a job command's parser: one option per field of ``model``."""
    return lambda parser: add_options(parser, job_options(model))


def _train_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="?", help="train job YAML (options below override it)")
    add_options(parser, job_options(TrainJob), require=False)


def _given(model: type[Spec], args: argparse.Namespace) -> dict[str, Any]:
    return given(job_options(model), args)


def _run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    result = api.demo(**_given(DemoJob, args))
    output = result.outputs[0]
    print(f"bundle: {output['bundle']}")
    print(f"report: {output['report']}")
    if output["predictions"]:
        scores = ", ".join(f"{k} F1 {v:.3f}" for k, v in result.summary["scene_f1"].items())
        print(f"predictions: {output['predictions']} ({scores})")
        print(f"mosaic: {output['mosaic']}")
    print(f"manifest: {result.manifest}")


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.job is None and args.data is None:
        parser.error("train needs a job file or --data PATH")
    result = api.train(job=args.job, **_given(TrainJob, args))
    for output in result.outputs:
        print(f"bundle: {output['bundle']}")
    print(f"manifest: {result.manifest}")


def _run_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    result = api.evaluate(**_given(EvaluateJob, args))
    print_result({k: round(v, 4) for k, v in result.summary.items()})
    print(f"metrics: {result.outputs[0]['metrics']}")


def _run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.scenes and not args.scene_list and not args.stac:
        parser.error("predict needs SCENE arguments, --scene-list FILE or --stac URL")
    result = api.predict_scene(**_given(PredictJob, args))
    if result.summary.get("nothing_to_do"):
        print(f"nothing to do: the search found no Items; {result.out} keeps what it holds")
        return
    if _printed_plan(result):
        return
    summary = result.summary
    _print_made([f"{output['scene']}: {output.get('mask_cog') or output['zarr']}" for output in result.outputs],
                f"{summary['megapixels']} Mpx, {summary['tiles_computed']}/{summary['tiles_total']} tiles computed, "
                f"{summary['mpx_per_s']} Mpx/s", result.manifest)


def _print_made(outputs: list[str], figures: str, manifest: Path) -> None:
    """Print what a job made: a line per output, its figures, its manifest."""
    print("\n".join([*outputs, figures, f"manifest: {manifest}"]))


def _printed_plan(result: api.JobResult) -> bool:
    """Print the plan of a dry run (``predict --dry-run``); whether ``result`` is one."""
    if not result.summary.get("dry_run"):
        return False
    from geoseg_batch.runs.dry_run import plan_lines

    print("\n".join(plan_lines(result.summary["plan"], result.out)))
    return True


def _run_mosaic(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    result = api.mosaic(**_given(MosaicJob, args))
    output, summary = result.outputs[0], result.summary
    _print_made([f"mosaic: {output.get('mask_cog') or output['zarr']}"],
                f"{summary['megapixels']} Mpx, {summary['chunks_written']}/{summary['chunks_total']} chunks written "
                f"from {summary['scenes']} scenes", result.manifest)


def _synth_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True)
    for name, default in (("--chips", 200), ("--bands", 14), ("--size", 128), ("--scenes", 2), ("--seed", 0)):
        parser.add_argument(name, type=int, default=default)


def _run_synth(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    result = api.synth(args.out, chips=args.chips, bands=args.bands, size=args.size, scenes=args.scenes,
                       seed=args.seed)
    print(f"chips: {result.chips_dir}")
    for scene in result.scenes:
        print(f"scene: {scene}")


def _pack_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="Landslide4Sense directory (img/, mask/) or shards to repack")
    parser.add_argument("out")
    parser.add_argument("--chips-per-shard", type=int, default=256)
    parser.add_argument("--fill-nan", type=float, metavar="V", help="replace NaN/inf pixels with V instead of failing")
    parser.add_argument("--compression", default="blosc", choices=("blosc", "gzip", "lzf", "none"),
                        help="blosc (LZ4, byte shuffle; default: fastest to read), gzip, lzf or none")
    parser.add_argument("--overwrite", action="store_true")
    _cluster_target(parser)


def _run_pack(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    result = api.pack_shards(args.src, args.out, chips_per_shard=args.chips_per_shard, fill_nan=args.fill_nan,
                             compression=args.compression, overwrite=args.overwrite, scheduler=args.scheduler,
                             workers=args.workers)
    print(f"packed {result.chips} chips into {result.shards} shards: {result.out}")
    print(f"stats: {result.stats}")


def _path_parser(parser: argparse.ArgumentParser, cluster: bool = False) -> None:
    parser.add_argument("path")
    if cluster:
        _cluster_target(parser)


def _run_shard_info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    print_result(api.shard_info(args.path))


def _run_shard_stats(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    print_result(api.shard_stats(args.path, scheduler=args.scheduler, workers=args.workers).to_dict())


def _job_file_parser(parser: argparse.ArgumentParser, cluster: bool = False) -> None:
    parser.add_argument("job")
    if cluster:
        _cluster_target(parser)


def _run_validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    job = api.validate(args.job)
    print(f"ok: {job.kind} job {job.name!r} ({args.job})")


def _run_submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    result = api.submit(args.job, scheduler=args.scheduler, workers=args.workers)
    if not _printed_plan(result):
        print(f"manifest: {result.manifest}")


def _info_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", metavar="ADDR", help="also check this scheduler answers")


def _run_info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    print_result(api.info(scheduler=args.scheduler))


Builder = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace, argparse.ArgumentParser], None]
Commands = dict[str, tuple[str, Builder, "Handler | Commands"]]

# command -> (help, parser builder, handler or sub-commands); the order is --help's
COMMANDS: Commands = {
    "demo": ("the main job: synthetic data -> shards -> train -> evaluate -> predict", _job_parser(DemoJob),
             _run_demo),
    "synth": ("synthetic Landslide4Sense chips and georeferenced scenes", _synth_parser, _run_synth),
    "shards": ("pack, inspect and summarize HDF5 shards", lambda parser: None, {
        "pack": ("validate chips and pack them into shards", _pack_parser, _run_pack),
        "info": ("index of a shard directory or file", _path_parser, _run_shard_info),
        "stats": ("per-band mean/std/min/max with Dask (saved as stats.json)",
                  functools.partial(_path_parser, cluster=True), _run_shard_stats),
    }),
    "train": ("train a U-Net / Attention U-Net (one run or a sweep)", _train_parser, _run_train),
    "evaluate": ("metrics, confusion matrix, PR curve and samples of a bundle", _job_parser(EvaluateJob),
                 _run_evaluate),
    "predict": ("segment scenes tile by tile on Dask: zarr + COGs per scene", _job_parser(PredictJob), _run_predict),
    "mosaic": ("many scenes' predictions onto one grid: zarr + COGs", _job_parser(MosaicJob), _run_mosaic),
    "validate": ("check a job file without touching a cluster", _job_file_parser, _run_validate),
    "submit": ("run any job file", functools.partial(_job_file_parser, cluster=True), _run_submit),
    "bench": ("benchmarks that print figures", lambda parser: None, BENCH_COMMANDS),
    "info": ("versions, devices, cluster reachability", _info_parser, _run_info),
}
SUBCOMMAND_DEST = {"shards": ("shards_command", "ACTION"), "bench": ("bench_command", "WHAT")}


def _add_commands(parser: argparse.ArgumentParser, commands: Commands, dest: str, metavar: str) -> None:
    """One sub-parser per entry of ``commands``, built by its builder, its handler set as ``handler``."""
    subparsers = parser.add_subparsers(dest=dest, required=True, metavar=metavar)
    for name, (text, build, handler) in commands.items():
        sub = subparsers.add_parser(name, help=text)
        build(sub)
        if isinstance(handler, dict):
            _add_commands(sub, handler, *SUBCOMMAND_DEST[name])
        else:
            sub.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    """The `geoseg-batch` parser: global options and every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog=PROG, description="Segment scenes of any size with a U-Net, on Dask.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only warnings and results")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="library logs (TensorFlow, Dask...) on stderr too, not only in the run's log file")
    _add_commands(parser, COMMANDS, "command", "COMMAND")
    return parser


def dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the parsed command's handler; returns the exit code."""
    args.handler(args, parser)
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
        except KeyboardInterrupt as exc:  # a run's RunInterrupted says what is saved and that a re-run resumes
            print(f"{PROG}: {str(exc) or 'interrupted'}", file=sys.stderr)
            return 130
        except Exception as exc:  # the promise is one line, not a traceback
            if args.debug:
                raise
            print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
                  f"{logs.log_pointer(log_path)}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
