"""One run per output: two predicts into one --out (the second refuses at once naming the holder, or with --wait
waits and finds everything done; the output equals a clean run), a stale lock taken over; and OS errors of the
output location, from the client and from worker tasks writing chunks, as one line with the right exit code."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geoseg_batch import predict_scene
from geoseg_batch.cli import main
from geoseg_batch.io.lease import Holder, lock_path
from tests.helpers import local_client, make_bundle, write_scene

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent")
    return make_bundle(root / "m.keras", base_filters=8), write_scene(root / "scene.tif", (512, 512))


@pytest.fixture(scope="module")
def threaded():
    with local_client(1, processes=False) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh_cli_logging():
    """main() logs to the stderr of its first call: give each test's calls this test's captured stderr."""
    logger = logging.getLogger("geoseg_batch")
    kept = list(logger.handlers)
    logger.handlers.clear()
    yield
    logger.handlers[:] = kept


def _arguments(inputs, out: Path, *extra: str) -> list[str]:
    bundle, scene = inputs
    return ["predict", str(scene), "--model", str(bundle), "--out", str(out), "--tile", "64", *extra]


def _last_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


def _same_arrays(a: Path, b: Path) -> None:
    with xr.open_zarr(a / "scene.zarr") as first, xr.open_zarr(b / "scene.zarr") as second:
        for variable in ("probabilities", "mask"):
            np.testing.assert_array_equal(first[variable].values, second[variable].values)


def test_a_second_run_refuses_at_once_and_with_wait_finds_everything_done(inputs, tmp_path, threaded, capsys):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "geoseg_batch.cli", "--quiet", *_arguments(inputs, out),
                              "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not lock_path(out).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        holder = Holder.loads(lock_path(out).read_text())
        assert holder is not None and holder.pid == first.pid
        started = time.monotonic()
        assert main(["--quiet", *_arguments(inputs, out)]) == 2
        assert time.monotonic() - started < 2, "refused at once"
        assert first.poll() is None, "the first run ended before the second started; make the scene larger"
        line = _last_line(capsys.readouterr().err)
        assert str(out) in line and f"pid {first.pid}" in line and "since" in line and "--wait" in line

        assert main(_arguments(inputs, out, "--wait", "--wait-timeout-s", "120")) == 0
        assert first.wait(timeout=60) == 0, first.stderr.read()
    finally:
        first.kill()
    log = capsys.readouterr().err
    assert "waiting for the run writing there" in log and "already holds this job's results" in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["run_key"] and not lock_path(out).exists()
    predict_scene(inputs[1], inputs[0], tmp_path / "clean", tile=64, client=threaded)
    assert json.loads((tmp_path / "clean" / "manifest.json").read_text())["summary"]["run_key"] == \
        manifest["summary"]["run_key"], "the same job: the same run key"
    _same_arrays(out, tmp_path / "clean")


def test_a_stale_lock_is_taken_over_with_a_log_line(inputs, tmp_path, threaded, caplog):
    out = tmp_path / "out"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock_path(out).write_text(Holder("elsewhere", 1, time.time() - 600, time.time() - 300, "expired").dumps())
    with caplog.at_level(logging.WARNING, logger="geoseg_batch.io.lease"):
        predict_scene(inputs[1], inputs[0], out, tile=64, client=threaded)
    assert "taking over the lock of a run that is gone (host elsewhere" in caplog.text and "expired" in caplog.text
    caplog.clear()
    lock_path(tmp_path / "again").write_text(Holder(os.uname().nodename, gone.pid, time.time(), time.time() + 60,
                                                    "dead").dumps())
    with caplog.at_level(logging.WARNING, logger="geoseg_batch.io.lease"):
        predict_scene(inputs[1], inputs[0], tmp_path / "again", tile=64, client=threaded)
    assert f"pid {gone.pid}" in caplog.text and "no longer running" in caplog.text
    _same_arrays(out, tmp_path / "again")
    assert not lock_path(out).exists() and not lock_path(tmp_path / "again").exists()


@pytest.mark.parametrize("case", ["out is a file", "out under a file"])
def test_an_out_the_user_must_fix_is_one_line_and_exit_2(inputs, tmp_path, threaded, capsys, case):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" if case == "out is a file" else tmp_path / "file" / "out"
    assert main(["--quiet", *_arguments(inputs, out, "--scheduler", threaded.scheduler.address)]) == 2
    line = _last_line(capsys.readouterr().err)
    assert line.startswith(f"geoseg-batch: error: {out}: ")
    assert ("is a file, not a directory" if case == "out is a file" else f"lies under {tmp_path / 'file'}") in line
    assert "--out" in line and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_no_space_in_a_worker_writing_chunks_is_one_line_exit_1_and_a_rerun_resumes(inputs, tmp_path, threaded,
                                                                                    capsys, monkeypatch):
    from geoseg_batch.io import zarr_store

    written = []
    real_write = zarr_store.ZarrTarget.write

    def fill_up(self, core, probabilities, valid):
        if len(written) >= 10:  # the device fills up after 10 tiles
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        written.append(core)
        real_write(self, core, probabilities, valid)

    monkeypatch.setattr(zarr_store.ZarrTarget, "write", fill_up)
    out = tmp_path / "out"
    arguments = _arguments(inputs, out, "--scheduler", threaded.scheduler.address)
    assert main(["--quiet", *arguments]) == 1
    line = _last_line(capsys.readouterr().err)
    assert "no space left on the device" in line and "scene.zarr" in line and "resumes" in line
    assert not out.exists() and not lock_path(out).exists()
    monkeypatch.undo()
    assert main(["--quiet", *arguments]) == 0
    assert json.loads((out / "manifest.json").read_text())["summary"]["tiles_resumed"] >= 10
    predict_scene(inputs[1], inputs[0], tmp_path / "clean", tile=64, client=threaded)
    _same_arrays(out, tmp_path / "clean")


def test_a_mosaic_with_wait_that_finds_its_results_does_nothing_and_another_one_refuses(inputs, tmp_path, threaded,
                                                                                        caplog):
    from geoseg_batch import mosaic
    from geoseg_batch.errors import OutputLockedError
    from geoseg_batch.io.lease import acquire_lease

    predicted = tmp_path / "predicted"
    predict_scene(inputs[1], inputs[0], predicted, tile=64, client=threaded)
    out = tmp_path / "mosaic"
    first = mosaic([predicted], out, chunk=128, client=threaded)
    published = (out / "manifest.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="geoseg_batch"):
        again = mosaic([predicted], out, chunk=128, client=threaded, wait=True)
    assert again.summary["already_done"] and again.outputs == first.outputs
    assert (out / "manifest.json").stat().st_mtime_ns == published and "already holds" in caplog.text
    with acquire_lease(out), pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
        mosaic([predicted], out, chunk=128, client=threaded, overwrite=True)
    with pytest.raises(OutputLockedError, match="after waiting"), acquire_lease(out):
        mosaic([predicted], out, chunk=256, client=threaded, wait=True, wait_timeout_s=0.5)
