"""The fault matrix (issue 14, acceptance 1): every failure is one line, exit 2 or 1, and publishes nothing.

One table of :class:`Case`: each builds its inputs in ``tmp_path`` (a tiny bundle, 64x64 scenes,
the session's shards), runs one ``geoseg-batch`` command line in this process (or in a fresh
one, for the cases that need it), and checks

* the exit code;
* that stderr ends with one line, ``geoseg-batch: error: ...`` (``alone``: and holds nothing else),
  with no traceback and no "unexpected";
* the line's key facts: regexes naming the path or argument AND the fix;
* that nothing is published: ``out`` absent (or, when it existed, unchanged), no ``.OUT.*``
  staging directory or versions beside it;
* where the case allows, that after ``fix`` (removing the cause) the SAME command line succeeds
  and its outputs (zarr arrays, COG pixels and georeferencing) are bitwise those of a clean run,
  made once per module (training is not bitwise repeatable: its re-run need only succeed and
  publish a bundle that loads).

Predict and mosaic run on one in-process cluster (threads; ``--scheduler``), so a case costs
no cluster start-up. Sections per class; the lead adds the lock / OS-error / hang / mask / size
cases after merging the branches that build them.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geoseg_batch.cli import main

from tests.helpers import make_bundle, write_scene

ROOT = Path(__file__).resolve().parents[1]
TILE = ("--tile", "32")
CHUNK = ("--chunk", "32")
TRAIN = ("--epochs", "1", "--depth", "2", "--base-filters", "4", "--batch-size", "16")
ERROR_LINE = re.compile(r"^geoseg-batch( [\w-]+)*: error: ")


# --------------------------------------------------------------------------- the harness


@dataclasses.dataclass
class Prepared:
    """What a case's setup built: the command line and what to check after it."""

    argv: list[str]
    facts: tuple[str, ...]
    """Regexes the error line must match (``re.search``): the path or argument, and the fix."""
    out: Path | None = None
    """The output that must not be published (absent afterwards, or unchanged if it existed)."""
    fix: Callable[[], None] | None = None
    """Removes the cause; the same ``argv`` must then succeed."""
    clean: str | None = None
    """With ``fix``: the clean run ("predict", "mosaic") the re-run's outputs must equal bitwise. None: the
    re-run must succeed and publish, not more (training shuffles with parallel reads: not bitwise repeatable)."""
    theirs: tuple[str, ...] = ()
    """Names beside ``out`` that belong to another run (its lock file), not to the failed one."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One fault or bad input: ``setup`` builds it in a World; the rest is what must hold."""

    id: str
    kind: str
    """The class of failure (the issue's list): bad input, argument, usage, job file, output, cluster, ..."""
    code: int
    setup: Callable[[World], Prepared]
    alone: bool = True
    """stderr holds the error line only (argparse's usage errors print the usage first)."""
    in_subprocess: bool = False
    """Run the console script in a fresh interpreter (signals, killed processes, fd-level output)."""
    within_s: float | None = None
    """The command must end within this many seconds (hangs, preflight)."""
    staging_kept: bool = False
    """A failure during the run may keep its staging directory (tile records: the re-run resumes)."""


class World:
    """One case's surroundings: its tmp_path, the module's bundle, cluster and canonical inputs."""

    def __init__(self, tmp: Path, bundle: Path, scheduler: str, request: pytest.FixtureRequest,
                 cleans: Cleans) -> None:
        self.tmp, self.bundle, self.scheduler, self._request, self.cleans = tmp, bundle, scheduler, request, cleans

    def finally_(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` after the case (a process or listener it started); returns None."""
        self._request.addfinalizer(cleanup)

    @property
    def monkeypatch(self) -> pytest.MonkeyPatch:
        """The case's monkeypatch (undone after it)."""
        return self._request.getfixturevalue("monkeypatch")

    @property
    def shards(self) -> Path:
        """The session's shard directory (built on first use)."""
        return self._request.getfixturevalue("shards_dir")

    def scene(self, path: Path, **options: Any) -> Path:
        """The canonical scene (64x64, 3 bands b1..b3, EPSG:32633) at ``path``, or a variant of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_scene(path, (64, 64), **options)

    def predict(self, *args: Any, out: Path | None = None) -> list[str]:
        """``predict ARGS --model BUNDLE --out OUT --tile 32 --scheduler ADDR`` (``--model`` unless given)."""
        model = () if "--model" in map(str, args) else ("--model", self.bundle)
        return _argv("predict", *args, *model, "--out", out or self.tmp / "out", *TILE,
                     *(() if "--scheduler" in map(str, args) else ("--scheduler", self.scheduler)))

    def mosaic(self, *predictions: Any, out: Path | None = None) -> list[str]:
        """``mosaic PREDICTIONS --out OUT --chunk 32 --scheduler ADDR``."""
        return _argv("mosaic", *predictions, "--out", out or self.tmp / "out", *CHUNK, "--scheduler", self.scheduler)

    def train(self, *args: Any, out: Path | None = None) -> list[str]:
        """``train ARGS --out OUT`` with the tiny model's options."""
        return _argv("train", *args, "--out", out or self.tmp / "out", *TRAIN)

    def job(self, body: str, name: str = "job.yaml") -> Path:
        """A job file in tmp_path."""
        path = self.tmp / name
        path.write_text(body)
        return path


def _argv(*parts: Any) -> list[str]:
    return [str(part) for part in parts]


def lit(value: Any) -> str:
    """A regex matching ``value`` (a path, an argument) literally."""
    return re.escape(str(value))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str], in_subprocess: bool = False,
            timeout_s: float = 300) -> tuple[int, str]:
    """(exit code, stderr) of ``geoseg-batch ARGV``: in this process, or the console script in a fresh one."""
    if in_subprocess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen([sys.executable, "-m", "geoseg_batch.cli", *argv], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        try:
            _, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # with the workers it started
            _, err = process.communicate()
            pytest.fail(f"geoseg-batch {' '.join(argv)} still running after {timeout_s:g} s; stderr:\n{err}")
        return process.returncode, err
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capsys.readouterr().err


def error_line(err: str, alone: bool = True) -> str:
    """The last line of stderr, checked to be one error line: no traceback, nothing 'unexpected'."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert "Traceback" not in err, err
    last = lines[-1]
    assert ERROR_LINE.match(last), f"the last line is not an error line: {err}"
    assert "unexpected" not in last, last
    if alone:
        assert len(lines) == 1, f"more than the error line on stderr:\n{err}"
    return last


def snapshot(out: Path) -> dict[str, bytes] | None:
    """Every file under ``out`` and its bytes (None: out does not exist)."""
    if not out.exists() and not out.is_symlink():
        return None
    if out.is_file():
        return {".": out.read_bytes()}
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def assert_nothing_published(out: Path, before: dict[str, bytes] | None, staging_kept: bool = False,
                             theirs: tuple[str, ...] = ()) -> None:
    """``out`` is as it was (absent, or the same files), and no staging or versions directory is beside it
    (but ``theirs``, another run's)."""
    assert snapshot(out) == before, f"{out} changed"
    beside = [p.name for p in out.parent.glob(f".{out.name}.*") if p.name not in theirs]
    if staging_kept:
        beside = [name for name in beside if ".staging-" not in name]
    assert not beside, f"left beside {out}: {beside}"


def results(out: Path) -> dict[str, Any]:
    """What a run published, to compare bitwise: zarr arrays, COG pixels and georeferencing, bundle weights."""
    import zarr

    found: dict[str, Any] = {}
    for store in sorted(out.glob("*.zarr")):
        for name, array in zarr.open_group(str(store), mode="r").arrays():
            found[f"{store.name}/{name}"] = np.asarray(array[...])
    for cog in sorted(out.glob("*.tif")):
        with rasterio.open(cog) as src:
            found[cog.name] = src.read()
            found[f"{cog.name}:geo"] = (src.crs.to_wkt(), tuple(src.transform), src.nodata, src.dtypes)
    for bundle in sorted(out.rglob("*.keras")):
        from geoseg_batch.model.bundle import load_bundle

        found[str(bundle.relative_to(out))] = load_bundle(bundle).model.get_weights()
    assert found, f"{out} holds no results"
    return found


def assert_same_results(received: dict[str, Any], expected: dict[str, Any]) -> None:
    """Bitwise equal: the same names, dtypes and values."""
    assert sorted(received) == sorted(expected)
    for name, value in expected.items():
        got = received[name]
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and np.array_equal(got, value, equal_nan=value.dtype.kind == "f"), name
        elif isinstance(value, list):  # weights
            assert len(got) == len(value) and all(np.array_equal(a, b) for a, b in zip(got, value)), name
        else:
            assert got == value, name


class Cleans:
    """The clean runs a fixed case's re-run must equal, each made once per module on first use."""

    def __init__(self, root: Path, bundle: Path, scheduler: str) -> None:
        self.root, self.bundle, self.scheduler = root, bundle, scheduler
        self._done: dict[str, dict[str, Any]] = {}

    def out(self, name: str) -> Path:
        """The clean run's output directory (made on first use)."""
        if name not in self._done:
            self._done[name] = results(self._run(name))
        return self.root / name

    def results(self, name: str) -> dict[str, Any]:
        """The clean run's results (see :func:`results`)."""
        self.out(name)
        return self._done[name]

    def _run(self, name: str) -> Path:
        out = self.root / name
        if name == "predict":
            scene = write_scene(_mkdir(self.root / "in") / "s1.tif", (64, 64))
            argv = _argv("predict", scene, "--model", self.bundle, "--out", out, *TILE, "--scheduler", self.scheduler)
        else:
            argv = _argv("mosaic", self.out("predict"), "--out", out, *CHUNK, "--scheduler", self.scheduler)
        assert main(["--quiet", *argv]) == 0, f"the clean {name} run failed"
        return out


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scheduler() -> Any:
    """An in-process cluster (one worker, two threads) for every predict and mosaic of the module."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle: 3 bands b1..b3, depth 2, 4 filters."""
    return make_bundle(tmp_path_factory.mktemp("bundle") / "m.keras", depth=2, base_filters=4)


@pytest.fixture(scope="module")
def cleans(tmp_path_factory: pytest.TempPathFactory, bundle: Path, scheduler: str) -> Cleans:
    """The module's clean predict and mosaic runs."""
    return Cleans(tmp_path_factory.mktemp("clean"), bundle, scheduler)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- bad input: scenes and bundles


def _missing_scene(w: World) -> Prepared:
    scene = w.tmp / "in" / "s1.tif"
    return Prepared(w.predict(scene), (lit(scene), "no such scene file", "check the path"), w.tmp / "out",
                    fix=lambda: w.scene(scene), clean="predict")


def _glob_matches_nothing(w: World) -> Prepared:
    folder = _mkdir(w.tmp / "in")
    return Prepared(w.predict(folder / "*.tif"), (lit(folder / "*.tif"), "matches no files", "check the folder"),
                    w.tmp / "out", fix=lambda: w.scene(folder / "s1.tif"), clean="predict")


def _scene_list_missing(w: World) -> Prepared:
    listing = w.tmp / "in" / "scenes.txt"

    def fix() -> None:
        w.scene(listing.parent / "s1.tif")
        listing.write_text("# tonight's scenes\ns1.tif\n")

    return Prepared(w.predict("--scene-list", listing), (lit(listing), "does not exist", "one path per line"),
                    w.tmp / "out", fix=fix, clean="predict")


def _scene_without_crs(w: World) -> Prepared:
    scene = _mkdir(w.tmp / "in") / "s1.tif"
    with rasterio.open(scene, "w", driver="GTiff", height=32, width=32, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 32, 32), np.uint8))
    return Prepared(w.predict(scene), (lit(scene), "no CRS", r"gdal_edit\.py -a_srs"), w.tmp / "out",
                    fix=lambda: w.scene(scene), clean="predict")


def _scene_not_a_raster(w: World) -> Prepared:
    scene = _mkdir(w.tmp / "in") / "s1.tif"
    scene.write_text("not a tiff")
    return Prepared(w.predict(scene), (lit(scene), "not a readable raster", "check it with `gdalinfo`"),
                    w.tmp / "out", fix=lambda: w.scene(scene), clean="predict")


def _wrong_band_count(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif", bands=4, named=False)
    return Prepared(w.predict(scene), (lit(scene), "4 bands", "expects 3", "pass --bands"), w.tmp / "out",
                    fix=lambda: w.scene(scene), clean="predict")


def _band_name_not_in_scene(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")

    def fix() -> None:  # the same pixels, the third band named as asked
        w.scene(scene, named=False)
        with rasterio.open(scene, "r+") as dst:
            dst.descriptions = ("b1", "b2", "nir")

    return Prepared(w.predict(scene, "--bands", "b1,b2,nir"),
                    (lit(scene), "no band named 'nir'", r"use names or numbers 1\.\.3"), w.tmp / "out",
                    fix=fix, clean="predict")


def _not_a_bundle(w: World) -> Prepared:
    scene, fake = w.scene(w.tmp / "in" / "s1.tif"), w.tmp / "m.keras"
    fake.write_text("not a model")
    return Prepared(w.predict(scene, "--model", fake),
                    (lit(fake), "not a model bundle", "written by `geoseg-batch train`"), w.tmp / "out",
                    fix=lambda: shutil.copyfile(w.bundle, fake), clean="predict")


def _missing_bundle(w: World) -> Prepared:
    scene, model = w.scene(w.tmp / "in" / "s1.tif"), w.tmp / "models" / "m.keras"
    return Prepared(w.predict(scene, "--model", model),
                    (lit(model), "no such model bundle", "written by `geoseg-batch train`"), w.tmp / "out",
                    fix=lambda: shutil.copyfile(w.bundle, _mkdir(model.parent) / model.name), clean="predict")


def _mosaic_of_a_non_prediction(w: World) -> Prepared:
    folder = _mkdir(w.tmp / "pred")
    (folder / "notes.txt").write_text("not a prediction")
    return Prepared(w.mosaic(folder), (lit(folder), "not a predict output", "give predict --out directories"),
                    w.tmp / "out", fix=lambda: shutil.copytree(w.cleans.out("predict"), folder, dirs_exist_ok=True),
                    clean="mosaic")


def _mosaic_of_a_missing_directory(w: World) -> Prepared:
    folder = w.tmp / "pred"
    return Prepared(w.mosaic(folder), (lit(folder), "not a predict output", "give predict --out directories"),
                    w.tmp / "out", fix=lambda: shutil.copytree(w.cleans.out("predict"), folder), clean="mosaic")


def _mosaic_same_scene_twice(w: World) -> Prepared:
    first, second = w.tmp / "a", w.tmp / "b"
    for folder in (first, second):
        shutil.copytree(w.cleans.out("predict"), folder)
    return Prepared(w.mosaic(first, second), (lit(second), "scene 's1'", "mosaic each scene once"), w.tmp / "out")


def _train_data_missing(w: World) -> Prepared:
    data = w.tmp / "shards"
    return Prepared(w.train("--data", data), (lit(data), "no such file or directory", "--data takes"),
                    w.tmp / "out", fix=lambda: shutil.copytree(w.shards, data))


def _train_data_not_a_dataset(w: World) -> Prepared:
    data = _mkdir(w.tmp / "chips")
    (data / "readme.txt").write_text("x")
    return Prepared(w.train("--data", data), (lit(data), "neither a Landslide4Sense directory", "point --data at one"),
                    w.tmp / "out")


def _evaluate_data_missing(w: World) -> Prepared:
    data = w.tmp / "shards"
    return Prepared(_argv("evaluate", "--model", w.bundle, "--data", data, "--out", w.tmp / "out"),
                    (lit(data), "no such file or directory", "--data takes"), w.tmp / "out")


BAD_INPUT = [
    Case("predict-missing-scene", "bad input", 2, _missing_scene),
    Case("predict-glob-matches-nothing", "bad input", 2, _glob_matches_nothing),
    Case("predict-scene-list-missing", "bad input", 2, _scene_list_missing),
    Case("predict-scene-without-crs", "bad input", 2, _scene_without_crs),
    Case("predict-scene-not-a-raster", "bad input", 2, _scene_not_a_raster),
    Case("predict-wrong-band-count", "bad input", 2, _wrong_band_count),
    Case("predict-band-name-not-in-scene", "bad input", 2, _band_name_not_in_scene),
    Case("predict-model-not-a-bundle", "bad input", 2, _not_a_bundle),
    Case("predict-missing-bundle", "bad input", 2, _missing_bundle),
    Case("mosaic-not-a-predict-output", "bad input", 2, _mosaic_of_a_non_prediction),
    Case("mosaic-missing-directory", "bad input", 2, _mosaic_of_a_missing_directory),
    Case("mosaic-same-scene-twice", "bad input", 2, _mosaic_same_scene_twice),
    Case("train-data-missing", "bad input", 2, _train_data_missing),
    Case("train-data-not-a-dataset", "bad input", 2, _train_data_not_a_dataset),
    Case("evaluate-data-missing", "bad input", 2, _evaluate_data_missing),
]


# --------------------------------------------------------------------------- bad arguments and usage


def _tile_not_a_multiple(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    argv = w.predict(scene)
    argv[argv.index("--tile") + 1] = "30"
    return Prepared(argv, ("tile size 30", "not a multiple", "use --tile 32"), w.tmp / "out")


def _resampling_without_resample(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    return Prepared(w.predict(scene, "--resampling", "cubic"),
                    ("resampling: got 'cubic' without resample", r"add resample: true \(--resample\)"), w.tmp / "out")


def _bad_zarr_format(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    return Prepared(w.predict(scene, "--zarr-format", "4"), ("argument --zarr-format", r"choose from 2, 3"),
                    w.tmp / "out")


def _scheduler_and_workers(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    return Prepared(w.predict(scene, "--workers", "2"),
                    (r"argument --(scheduler|workers): not allowed with argument --(workers|scheduler)",),
                    w.tmp / "out")


def _mosaic_chunk_too_small(w: World) -> Prepared:
    argv = w.mosaic(w.cleans.out("predict"))
    argv[argv.index("--chunk") + 1] = "8"
    return Prepared(argv, (r"\bchunk: ", "greater than or equal to 16", r"received 8"), w.tmp / "out")


def _mosaic_unknown_crs(w: World) -> Prepared:
    return Prepared(w.mosaic(w.cleans.out("predict"), "--crs", "EPSG:999999"),
                    ("crs 'EPSG:999999' is not a CRS", "expected an EPSG code such as"),
                    w.tmp / "out")


def _mosaic_empty_bounds(w: World) -> Prepared:
    return Prepared(w.mosaic(w.cleans.out("predict"), "--bounds", "500640", "5199360", "500000", "5200000"),
                    (r"bounds \(500640\.0, ", "are empty", "with left < right, bottom < top"), w.tmp / "out")


def _train_fractions_leave_nothing(w: World) -> Prepared:
    return Prepared(w.train("--data", w.tmp, "--val-fraction", "0.6", "--test-fraction", "0.5"),
                    ("val_fraction \\+ test_fraction = 1.1", "keep their sum below 1"), w.tmp / "out")


def _train_input_size_not_a_multiple(w: World) -> Prepared:
    return Prepared(w.train("--data", w.tmp, "--input-size", "30"),
                    ("input_size 30", r"multiple of 2\*\*depth = 4", "pick a multiple or change depth"), w.tmp / "out")


def _train_without_data(w: World) -> Prepared:
    return Prepared(_argv("train", "--out", w.tmp / "out"), ("train needs a job file or --data PATH",), w.tmp / "out")


ARGUMENTS = [
    Case("predict-tile-not-a-multiple", "argument", 2, _tile_not_a_multiple),
    Case("predict-resampling-without-resample", "argument", 2, _resampling_without_resample),
    Case("mosaic-chunk-too-small", "argument", 2, _mosaic_chunk_too_small),
    Case("mosaic-unknown-crs", "argument", 2, _mosaic_unknown_crs),
    Case("mosaic-empty-bounds", "argument", 2, _mosaic_empty_bounds),
    Case("train-fractions-leave-nothing", "argument", 2, _train_fractions_leave_nothing),
    Case("train-input-size-not-a-multiple", "argument", 2, _train_input_size_not_a_multiple),
    Case("predict-bad-zarr-format", "usage", 2, _bad_zarr_format, alone=False),
    Case("predict-scheduler-and-workers", "usage", 2, _scheduler_and_workers, alone=False),
    Case("train-without-data", "usage", 2, _train_without_data, alone=False),
]


# --------------------------------------------------------------------------- job files (validate, submit, train JOB)


def _unknown_key(w: World) -> Prepared:
    job = w.job(f"kind: train\nout: {w.tmp / 'out'}\ndata: {{path: {w.tmp}}}\nmodle: {{depth: 2}}\n")
    return Prepared(_argv("validate", job), (lit(job), "modle: unknown key", "did you mean model"), w.tmp / "out")


def _wrong_type(w: World) -> Prepared:
    job = w.job(f"kind: train\nout: {w.tmp / 'out'}\ndata: {{path: {w.tmp}}}\ntrain: {{epochs: many}}\n")
    return Prepared(_argv("validate", job), (lit(job), "train.epochs: Input should be a valid integer",
                                             "received 'many'"), w.tmp / "out")


def _missing_key(w: World) -> Prepared:
    job = w.job(f"kind: train\nout: {w.tmp / 'out'}\n")
    return Prepared(_argv("validate", job), (lit(job), "data: required key is missing", "add it"), w.tmp / "out")


def _job_input_missing(w: World) -> Prepared:
    scene = w.tmp / "in" / "s1.tif"
    job = w.job(f"kind: predict\nscenes: [{scene}]\nmodel: {w.bundle}\nout: {w.tmp / 'out'}\n")
    return Prepared(_argv("validate", job), (lit(job), f"scenes: {lit(scene)} does not exist", "fix the path"),
                    w.tmp / "out")


def _no_such_job_file(w: World) -> Prepared:
    job = w.tmp / "nightly.yaml"
    return Prepared(_argv("validate", job), (lit(job), "no such job file"), None)


def _pipeline_overlap(w: World) -> Prepared:
    scene, pred = w.scene(w.tmp / "in" / "s1.tif"), w.tmp / "pred"
    job = w.job(f"kind: pipeline\nout: {w.tmp / 'history'}\nsteps:\n"
                f"  - {{kind: predict, scenes: [{scene}], model: {w.bundle}, out: {pred}}}\n"
                f"  - {{kind: mosaic, predictions: [{pred}], out: {pred / 'mosaic'}}}\n")
    return Prepared(_argv("submit", job), (lit(job), r"steps\[0\]\.out", r"steps\[1\]\.out", "overlap",
                                           "give each step its own output directory"), pred)


def _train_job_unknown_key(w: World) -> Prepared:
    job = w.job(f"kind: train\nout: {w.tmp / 'out'}\ndata: {{path: {w.tmp}}}\nmodel: {{depht: 2}}\n")
    return Prepared(_argv("train", job), (lit(job), "model.depht: unknown key", "did you mean depth"), w.tmp / "out")


def _submit_not_yaml(w: World) -> Prepared:
    job = w.scene(w.tmp / "s1.tif")
    return Prepared(_argv("submit", job), (lit(job), "not a YAML job file", r"give the job's \.yaml file"), None)


def _submit_a_directory(w: World) -> Prepared:
    folder = _mkdir(w.tmp / "jobs")
    return Prepared(_argv("submit", folder), (lit(folder), "is a directory", r"give the job's \.yaml file"), None)


def _submit_invalid_yaml(w: World) -> Prepared:
    job = w.job("kind: [\n")
    return Prepared(_argv("submit", job), (lit(job), "not valid YAML", r"line \d+, column \d+", "fix the syntax"),
                    None)


def _submit_unknown_kind(w: World) -> Prepared:
    job = w.job(f"kind: predcit\nout: {w.tmp / 'out'}\n")
    return Prepared(_argv("submit", job), (lit(job), "'predcit' is not a job kind", "did you mean predict"),
                    w.tmp / "out")


def _submit_not_a_mapping(w: World) -> Prepared:
    job = w.job("- predict\n- mosaic\n")
    return Prepared(_argv("submit", job), (lit(job), "a job is a mapping with a 'kind' key", "got list"), None)


def _submit_scene_missing(w: World) -> Prepared:
    scene = w.tmp / "in" / "s1.tif"
    job = w.job(f"kind: predict\nscenes: [{scene}]\nmodel: {w.bundle}\nout: {w.tmp / 'out'}\ntile: 32\n")
    return Prepared(_argv("submit", job, "--scheduler", w.scheduler),
                    (lit(job), f"scenes: {lit(scene)} does not exist", "fix the path"),
                    w.tmp / "out", fix=lambda: w.scene(scene), clean="predict")


JOB_FILES = [
    Case("validate-unknown-key", "job file", 2, _unknown_key),
    Case("validate-wrong-type", "job file", 2, _wrong_type),
    Case("validate-missing-key", "job file", 2, _missing_key),
    Case("validate-input-missing", "job file", 2, _job_input_missing),
    Case("validate-no-such-job-file", "job file", 2, _no_such_job_file, in_subprocess=True),  # nothing native
    Case("train-job-unknown-key", "job file", 2, _train_job_unknown_key),
    Case("submit-pipeline-overlapping-outputs", "job file", 2, _pipeline_overlap),
    Case("submit-not-yaml", "job file", 2, _submit_not_yaml),
    Case("submit-a-directory", "job file", 2, _submit_a_directory),
    Case("submit-invalid-yaml", "job file", 2, _submit_invalid_yaml),
    Case("submit-unknown-kind", "job file", 2, _submit_unknown_kind),
    Case("submit-not-a-mapping", "job file", 2, _submit_not_a_mapping),
    Case("submit-predict-scene-missing", "job file", 2, _submit_scene_missing),
]


# --------------------------------------------------------------------------- outputs


def _predict_out_exists(w: World) -> Prepared:
    scene, out = w.scene(w.tmp / "in" / "s1.tif"), _mkdir(w.tmp / "out")
    (out / "notes.txt").write_text("keep me")
    return Prepared(w.predict(scene), (lit(out), "already exists", "choose another --out or pass --overwrite"), out,
                    fix=lambda: shutil.rmtree(out), clean="predict")


def _mosaic_out_unrelated(w: World) -> Prepared:
    out = _mkdir(w.tmp / "out")
    (out / "notes.txt").write_text("keep me")
    return Prepared(w.mosaic(w.cleans.out("predict")), (lit(out), "already exists",
                                                       "choose another --out or pass --overwrite"), out,
                    fix=lambda: shutil.rmtree(out), clean="mosaic")


OUTPUTS = [
    Case("predict-out-exists", "output", 2, _predict_out_exists),
    Case("mosaic-out-holds-something-else", "output", 2, _mosaic_out_unrelated),
]
# -- hook: lock (one run per output; wt/lock): OutputLockedError naming the holder, --wait, a stale lock
#    taken over. Add the cases here (e.g. a lock held by a live pid on out -> exit 2, the holder named; a stale
#    one -> taken over: then the case is a success, tested beside the matrix, not in it).


def _held_by_another_run(w: World, out: Path) -> tuple[Path, Callable[[], None]]:
    """A lock on ``out`` held by a live process of this host (a sleeping child); returns the lock file and
    the fix: the holder ends (its lease is then stale: the re-run takes it over)."""
    from geoseg_batch.io.lease import Holder, lock_path

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    w.finally_(lambda: (holder.kill(), holder.wait()))
    lock = lock_path(out)
    lock.write_text(Holder(os.uname().nodename, holder.pid, time.time(), time.time() + 600, "theirs").dumps())
    return lock, lambda: (holder.kill(), holder.wait())


def _predict_output_locked(w: World) -> Prepared:
    scene, out = w.scene(w.tmp / "in" / "s1.tif"), w.tmp / "out"
    lock, fix = _held_by_another_run(w, out)
    return Prepared(w.predict(scene), (lit(out), "another run is writing there", r"pid \d+", "--wait"),
                    out, fix=fix, clean="predict", theirs=(lock.name,))


def _mosaic_output_locked(w: World) -> Prepared:
    out = w.tmp / "out"
    lock, fix = _held_by_another_run(w, out)
    return Prepared(w.mosaic(w.cleans.out("predict")), (lit(out), "another run is writing there", "--wait"),
                    out, fix=fix, clean="mosaic", theirs=(lock.name,))


def _predict_lock_wait_times_out(w: World) -> Prepared:
    scene, out = w.scene(w.tmp / "in" / "s1.tif"), w.tmp / "out"
    lock, _ = _held_by_another_run(w, out)
    return Prepared(w.predict(scene, "--wait", "--wait-timeout-s", "1"),
                    (lit(out), "after waiting 1 s", r"pid \d+", "--wait-timeout-s"), out, theirs=(lock.name,))


LOCK = [
    Case("predict-output-locked", "lock", 2, _predict_output_locked, within_s=10),
    Case("mosaic-output-locked", "lock", 2, _mosaic_output_locked, within_s=10),
    Case("predict-lock-wait-times-out", "lock", 2, _predict_lock_wait_times_out, alone=False,  # "waiting for ..."
         within_s=15),
]
# -- hook: OS errors (wt/lock): read-only location, out is a file / lies under a file, no space -> one line,
#    the path and what to do, exit 2 (or 1 during the run), never "unexpected".


def _a_file_in_the_way(w: World) -> Path:
    """A regular file where an output directory is to go."""
    (w.tmp / "file").write_text("not a directory")
    return w.tmp / "file"


def _predict_out_is_a_file(w: World) -> Prepared:
    scene, file = w.scene(w.tmp / "in" / "s1.tif"), _a_file_in_the_way(w)
    return Prepared(w.predict(scene, out=file), (lit(file), "is a file, not a directory", "--out"), file,
                    fix=file.unlink, clean="predict")


def _predict_out_under_a_file(w: World) -> Prepared:
    scene, file = w.scene(w.tmp / "in" / "s1.tif"), _a_file_in_the_way(w)
    out = file / "out"
    return Prepared(w.predict(scene, out=out), (lit(out), f"lies under {re.escape(str(file))}", "--out"), out,
                    fix=lambda: (file.unlink(), file.mkdir()), clean="predict")


def _mosaic_out_is_a_file(w: World) -> Prepared:
    file = _a_file_in_the_way(w)
    return Prepared(w.mosaic(w.cleans.out("predict"), out=file), (lit(file), "is a file, not a directory", "--out"),
                    file, fix=file.unlink, clean="mosaic")


def _predict_no_space(w: World) -> Prepared:
    from geoseg_batch.io import zarr_store

    scene, monkeypatch = w.scene(w.tmp / "in" / "s1.tif"), w.monkeypatch
    real_write, written = zarr_store.ZarrTarget.write, []

    def fill_up(self: Any, core: Any, probabilities: Any, valid: Any) -> None:
        if len(written) >= 2:  # the device fills up after 2 tiles
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        written.append(core)
        real_write(self, core, probabilities, valid)

    monkeypatch.setattr(zarr_store.ZarrTarget, "write", fill_up)
    return Prepared(w.predict(scene), ("no space left on the device", r"s1\.zarr", "resumes"), w.tmp / "out",
                    fix=monkeypatch.undo, clean="predict")


OS_ERRORS = [
    Case("predict-out-is-a-file", "OS error", 2, _predict_out_is_a_file),
    Case("predict-out-under-a-file", "OS error", 2, _predict_out_under_a_file),
    Case("mosaic-out-is-a-file", "OS error", 2, _mosaic_out_is_a_file),
    Case("predict-no-space", "OS error", 1, _predict_no_space, alone=False,  # the run's own lines come first
         staging_kept=True),
]


# --------------------------------------------------------------------------- cluster


def _scheduler_unreachable(w: World) -> Prepared:
    scene, address = w.scene(w.tmp / "in" / "s1.tif"), f"tcp://127.0.0.1:{closed_port()}"
    return Prepared(w.predict(scene, "--scheduler", address, "--timeout-s", "1"),
                    (lit(address), "did not answer within 1 s", "drop --scheduler to use a local cluster"),
                    w.tmp / "out")


def _scheduler_unparsable(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    return Prepared(w.predict(scene, "--scheduler", "scheduler-host"),
                    ("'scheduler-host' is not a scheduler address", "give tcp://HOST:PORT"), w.tmp / "out")


def _submit_scheduler_unreachable(w: World) -> Prepared:
    address = f"tcp://127.0.0.1:{closed_port()}"
    job = w.job(f"kind: mosaic\npredictions: [{w.cleans.out('predict')}]\nout: {w.tmp / 'out'}\n"
                f"cluster: {{scheduler: '{address}', timeout_s: 1}}\n")
    return Prepared(_argv("submit", job), (lit(address), "did not answer", "check the address"), w.tmp / "out")


def _shards_stats_scheduler_unparsable(w: World) -> Prepared:
    return Prepared(_argv("shards", "stats", w.shards, "--scheduler", "scheduler-host"),
                    ("scheduler: 'scheduler-host' is not a scheduler address", "give tcp://HOST:PORT"), None)


CLUSTER = [
    Case("predict-scheduler-unreachable", "cluster", 2, _scheduler_unreachable, within_s=30),
    Case("predict-scheduler-unparsable", "cluster", 2, _scheduler_unparsable),
    Case("submit-mosaic-scheduler-unreachable", "cluster", 2, _submit_scheduler_unreachable, within_s=30),
    Case("shards-stats-scheduler-unparsable", "cluster", 2, _shards_stats_scheduler_unparsable),
]
# -- hook: hangs (wt/hangs): a listener that is not a scheduler (a socket in setup, closed by w.finally_), the
#    scheduler killed mid-run, the only worker killed mid-run (in_subprocess=True, within_s=the bound: the run is
#    killed with its process group past it), Ctrl-C saying how many tiles are safe and that the same command
#    resumes (staging_kept=True where the re-run resumes; code 130).


def _silent_listener(w: World) -> str:
    """A TCP listener on 127.0.0.1 that accepts and never says a word (not a Dask scheduler); its address."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    w.finally_(lambda: [sock.close() for sock in (*accepted, server)])
    return f"tcp://127.0.0.1:{server.getsockname()[1]}"


def _listener_not_a_scheduler(w: World) -> Prepared:
    scene, address = w.scene(w.tmp / "in" / "s1.tif"), _silent_listener(w)
    return Prepared(w.predict(scene, "--scheduler", address, "--timeout-s", "2"),
                    (lit(address), "did not answer within 2 s", "not a Dask scheduler", "check the address"),
                    w.tmp / "out")


def _gpu_tasks_without_a_gpu_worker(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    return Prepared(w.predict(scene, "--gpu"), ("gpu: true", "no worker of the cluster advertises a GPU",
                                                "drop --gpu"), w.tmp / "out")


HANGS = [
    Case("predict-listener-not-a-scheduler", "hang", 2, _listener_not_a_scheduler, within_s=15),
    Case("predict-gpu-tasks-without-a-gpu-worker", "hang", 2, _gpu_tasks_without_a_gpu_worker, within_s=30,
         alone=False),  # the dashboard line comes first
]


# --------------------------------------------------------------------------- silent wrong results, sizes

# -- hook: masks (wt/masks): alpha band / GDAL mask read as nodata, out-of-distribution scene with --strict
#    refused, an all-nodata scene reported, GCP-georeferenced scenes (read warped, or refused with the gdalwarp
#    line).


def _canonical_again(w: World, scene: Path) -> Callable[[], None]:
    """The fix of a bad scene: the canonical scene written over it."""
    return lambda: (scene.unlink(), w.scene(scene))


def _implausible_strict(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="uint16")
    with rasterio.open(scene, "w", **profile) as dst:  # "uint16 reflectances" into a model trained on 1..254
        dst.write(data.astype("uint16") * 100)
    return Prepared(w.predict(scene, "--strict"), (lit(scene), r"band b\d", "median", "refused by --strict",
                                                   "drop --strict"), w.tmp / "out",
                    fix=_canonical_again(w, scene), clean="predict")


def _all_nodata_strict(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif", nodata=0)
    with rasterio.open(scene, "r+") as dst:
        dst.write(np.zeros((dst.count, dst.height, dst.width), dst.dtypes[0]))
    return Prepared(w.predict(scene, "--strict"), (lit(scene), "every pixel is nodata", "refused by --strict"),
                    w.tmp / "out", fix=_canonical_again(w, scene), clean="predict")


def _alpha_band_not_data(w: World) -> Prepared:
    from rasterio.enums import ColorInterp

    scene = w.scene(w.tmp / "in" / "s1.tif", bands=4, named=False)
    with rasterio.open(scene, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return Prepared(w.predict(scene), (lit(scene), "band 4 is an alpha band", "--bands 1,2,3"), w.tmp / "out",
                    fix=_canonical_again(w, scene), clean="predict")


MASKS = [
    Case("predict-implausible-values-strict", "plausibility", 2, _implausible_strict, alone=False),  # warned first
    Case("predict-all-nodata-strict", "plausibility", 2, _all_nodata_strict, alone=False),
    Case("predict-alpha-band-is-not-data", "masks", 2, _alpha_band_not_data),
]
# -- hook: preflight sizes (wt/preflight): mosaic --resolution, --tile, --batch-size, --bounds too big: refused
#    within 2 s (within_s=2), naming the argument and a value that fits.


def _with(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced (World's own --tile/--chunk come last, and argparse keeps the last)."""
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def _predict_tile_too_large(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    return Prepared(_with(w.predict(scene), "--tile", "1000000"),
                    (r"tile \(--tile\) 1000000", "a worker may use", r"use --tile \d+ or less"), w.tmp / "out")


def _predict_batch_too_large(w: World) -> Prepared:
    scene = w.scene(w.tmp / "in" / "s1.tif")
    return Prepared(w.predict(scene, "--batch-size", "100000"),
                    (r"batch_size \(--batch-size\) 100000", r"use --batch-size \d+ or less"), w.tmp / "out")


def _mosaic_resolution_too_fine(w: World) -> Prepared:
    return Prepared(w.mosaic(w.cleans.out("predict"), "--resolution", "0.01"),
                    (r"resolution \(--resolution\) 0.01", "chunks", r"use --resolution [0-9.]+ or coarser"),
                    w.tmp / "out")


def _mosaic_bounds_too_large(w: World) -> Prepared:
    far = ("-1000000000", "-1000000000", "1000000000", "1000000000")
    return Prepared(w.mosaic(w.cleans.out("predict"), "--bounds", *far),
                    (r"bounds \(--bounds\) -1e\+09", r"use smaller --bounds \(the scenes cover "), w.tmp / "out")


def _mosaic_chunk_too_large(w: World) -> Prepared:
    return Prepared(_with(w.mosaic(w.cleans.out("predict")), "--chunk", "1000000"),
                    (r"chunk \(--chunk\) 1000000", "a worker may use", r"use --chunk \d+ or less"), w.tmp / "out")


# The worker-side ones are checked once connected to --scheduler (its workers' limits are known then), after
# the dashboard line; the client-side ones before connecting.
SIZES = [
    Case("predict-tile-too-large", "size", 2, _predict_tile_too_large, alone=False, within_s=2),
    Case("predict-batch-size-too-large", "size", 2, _predict_batch_too_large, alone=False, within_s=2),
    Case("mosaic-resolution-too-fine", "size", 2, _mosaic_resolution_too_fine, within_s=2),
    Case("mosaic-bounds-too-large", "size", 2, _mosaic_bounds_too_large, within_s=2),
    Case("mosaic-chunk-too-large", "size", 2, _mosaic_chunk_too_large, alone=False, within_s=2),
]


CASES = [*BAD_INPUT, *ARGUMENTS, *JOB_FILES, *OUTPUTS, *LOCK, *OS_ERRORS, *CLUSTER, *HANGS, *MASKS, *SIZES]


def test_the_matrix_is_large_and_covers_every_command():
    assert len(CASES) >= 25 and len({case.id for case in CASES}) == len(CASES)
    commands = {case.id.split("-")[0] for case in CASES}
    assert {"predict", "mosaic", "train", "submit", "validate"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], bundle: Path, scheduler: str,
               cleans: Cleans, request: pytest.FixtureRequest) -> None:
    world = World(tmp_path, bundle, scheduler, request, cleans)
    prepared = case.setup(world)
    before = snapshot(prepared.out) if prepared.out is not None else None
    started = time.monotonic()
    code, err = run_cli(prepared.argv, capsys, case.in_subprocess, timeout_s=(case.within_s or 270) + 30)
    elapsed = time.monotonic() - started
    line = error_line(err, case.alone)
    assert code == case.code, line
    for fact in prepared.facts:
        assert re.search(fact, line), f"{fact!r} not in: {line}"
    if case.within_s is not None:
        assert elapsed < case.within_s, f"took {elapsed:.1f} s (bound {case.within_s} s)"
    if prepared.out is not None:
        assert_nothing_published(prepared.out, before, case.staging_kept, prepared.theirs)
    if prepared.fix is None:
        return
    prepared.fix()
    code, err = run_cli(["--quiet", *prepared.argv], capsys, case.in_subprocess)
    assert code == 0, err
    assert prepared.out is not None
    published = results(prepared.out)
    if prepared.clean is not None:
        assert_same_results(published, cleans.results(prepared.clean))
