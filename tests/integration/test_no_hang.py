"""Nothing waits unbounded: a listener that is not a scheduler, a scheduler or the only worker killed mid-run,
Ctrl-C, and workers killed at random (chaos) each end in one line within their bound, or complete identically."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geoseg_batch.cli import main
from tests.helpers import local_client, make_bundle, write_scene

DASK = str(Path(sys.executable).with_name("dask"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TILES = 144  # a 768 x 768 scene in tiles of 64


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _predict_command(scene: Path, bundle: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "geoseg_batch.cli", "--quiet", "predict", str(scene), "--model", str(bundle),
            "--out", str(out), "--tile", "64", "--no-cog", "--float", *options]


def _done(out: Path) -> int:
    return len(list(out.parent.glob(f".{out.name}.staging-*/.done/scene/*")))


def _wait_for_tiles(out: Path, process: subprocess.Popen, count: int, within_s: float = 240) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and process.poll() is None and _done(out) < count:
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before {count} tiles were done: {process.communicate()}"
    return _done(out)


def _signal_state(pid: int) -> str:
    """The SigBlk / SigIgn / SigCgt lines of a process's status (Linux), for a failure message."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        return f"unknown ({exc})"
    return "; ".join(line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _assert_same_store(a: Path, b: Path) -> None:
    with xr.open_zarr(a / "scene.zarr") as first, xr.open_zarr(b / "scene.zarr") as second:
        for variable in ("probabilities", "mask"):
            np.testing.assert_array_equal(first[variable].values, second[variable].values)


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def _external_cluster(logs: Path, nanny: bool = True) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """(address, scheduler process, worker process): `dask scheduler` and one single-threaded `dask worker`."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{_free_port()}"
    logs.mkdir(parents=True, exist_ok=True)
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                  "--dashboard-address", ":0"], stdout=open(logs / "scheduler.log", "w"),
                                 stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
    worker = subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-dashboard",
                               *([] if nanny else ["--no-nanny"])], stdout=open(logs / "worker.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
        yield address, scheduler, worker
    finally:
        _stop(worker)
        _stop(scheduler)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(bundle, 768 x 768 scene, the output of an undisturbed run of it)."""
    if not Path(DASK).exists():
        pytest.skip("the dask command-line tool is not installed")
    root = tmp_path_factory.mktemp("inputs")
    bundle = make_bundle(root / "m.keras", base_filters=8)
    scene = write_scene(root / "scene.tif", (768, 768))
    clean = root / "clean"
    run = subprocess.run(_predict_command(scene, bundle, clean, "--workers", "1"), capture_output=True, text=True,
                         timeout=400, env=ENV)
    assert run.returncode == 0, run.stderr
    return bundle, scene, clean


@pytest.mark.cluster
@pytest.mark.timeout(60)
def test_a_listener_that_is_not_a_scheduler_is_one_line_within_the_timeout(tmp_path, capsys):
    scene, bundle = write_scene(tmp_path / "s.tif", (64, 64)), make_bundle(tmp_path / "m.keras")
    with socket.socket() as listener:  # accepts connections (the kernel's backlog) and never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        code = main(["predict", str(scene), "--model", str(bundle), "--out", str(tmp_path / "p"),
                     "--scheduler", address, "--timeout-s", "2"])
        waited = time.monotonic() - started
    line = _last_line(capsys.readouterr().err)
    assert code == 2 and waited < 2 + 10, (code, waited)
    assert line.startswith("geoseg-batch: error:") and address in line and "did not answer within 2 s" in line
    assert "not a Dask scheduler" in line and "tcp://HOST:PORT" in line
    assert not list(tmp_path.glob("*p*")), "nothing is left where results are published"


@pytest.mark.parametrize("address", ["tcp://nohost", "http://127.0.0.1:8786", "tcp://127.0.0.1:port"])
def test_a_scheduler_address_that_does_not_parse_is_one_line_naming_the_form(tmp_path, capsys, address):
    scene, bundle = write_scene(tmp_path / "s.tif", (64, 64)), make_bundle(tmp_path / "m.keras")
    code = main(["predict", str(scene), "--model", str(bundle), "--out", str(tmp_path / "p"), "--scheduler", address])
    line = _last_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("geoseg-batch: error: ") and f"cluster.scheduler: {address!r}" in line
    assert "is not a scheduler address" in line and "give tcp://HOST:PORT" in line


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_scheduler_is_one_line_and_a_rerun_on_a_new_cluster_resumes_identically(tmp_path, inputs):
    bundle, scene, clean = inputs
    out = tmp_path / "out"
    with _external_cluster(tmp_path / "first") as (address, scheduler, _):
        run = subprocess.Popen(_predict_command(scene, bundle, out, "--scheduler", address, "--timeout-s", "5"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env=ENV)
        try:
            _wait_for_tiles(out, run, 16)
            os.killpg(scheduler.pid, signal.SIGKILL)
            killed = time.monotonic()
            _, err = run.communicate(timeout=5 + 60)
        finally:
            _stop(run, signal.SIGKILL)
    assert time.monotonic() - killed < 5 + 60
    line = _last_line(err)
    assert run.returncode == 1, err
    assert line.startswith("geoseg-batch: error: lost the scheduler at " + address), err
    saved = int(line.split(" of ")[0].rsplit(" ", 1)[1])
    assert 16 <= saved <= _done(out) < TILES and f"of {TILES} tiles are saved" in line
    assert "re-running the same command resumes" in line
    # (distributed.client's own reconnect errors, a traceback at times, may come before it: its logging's)
    assert not out.exists()

    with _external_cluster(tmp_path / "second") as (address, _, _):
        rerun = subprocess.run(_predict_command(scene, bundle, out, "--scheduler", address), capture_output=True,
                               text=True, timeout=400, env=ENV)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same_store(out, clean)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_only_worker_killed_is_one_line_within_the_no_worker_timeout(tmp_path, inputs):
    bundle, scene, _ = inputs
    out = tmp_path / "out"
    with _external_cluster(tmp_path / "cluster", nanny=False) as (address, _, worker):
        run = subprocess.Popen(_predict_command(scene, bundle, out, "--scheduler", address,
                                                "--no-worker-timeout-s", "5"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env=ENV)
        try:
            _wait_for_tiles(out, run, 8)
            os.killpg(worker.pid, signal.SIGKILL)  # no nanny: nothing restarts it
            killed = time.monotonic()
            _, err = run.communicate(timeout=5 + 60)
        finally:
            _stop(run, signal.SIGKILL)
        waited = time.monotonic() - killed
    line = _last_line(err)
    assert run.returncode == 1, err
    assert 5 <= waited < 5 + 60
    assert line.startswith(f"geoseg-batch: error: the cluster at {address} (dashboard http://"), err
    assert "has had no live worker for 5 s (cluster.no_worker_timeout_s)" in line
    assert f"of {TILES} tiles are saved" in line and "re-running the same command resumes" in line
    assert "Traceback" not in err and not out.exists()


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_says_how_many_tiles_are_saved_and_the_same_command_resumes_identically(tmp_path, inputs):
    bundle, scene, clean = inputs
    out = tmp_path / "out"
    command = _predict_command(scene, bundle, out, "--workers", "1")
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, env=ENV)
    try:
        _wait_for_tiles(out, run, 16)
        signals = _signal_state(run.pid)  # said on failure: a client that blocks or ignores SIGINT runs to its end
        os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the client and its cluster's workers
        _, err = run.communicate(timeout=120)
    finally:
        _stop(run, signal.SIGKILL)
    line = _last_line(err)
    assert run.returncode == 130, (f"{err}\nthe client's signal masks before Ctrl-C: {signals}; this test's: SIGINT "
                                   f"handler {signal.getsignal(signal.SIGINT)}, blocked "
                                   f"{signal.pthread_sigmask(signal.SIG_BLOCK, [])}")
    assert line.startswith("geoseg-batch: interrupted; ") and line.endswith("re-running the same command resumes")
    assert "Traceback" not in err, err  # the workers leave Ctrl-C to the client
    saved = int(line.split("interrupted; ")[1].split(" ")[0])
    # the tasks running when the client stopped may record a few more tiles after the count
    assert 16 <= saved <= _done(out) < TILES and f"{saved} of {TILES} tiles are saved in {tmp_path}" in line
    assert not out.exists()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=400, env=ENV)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same_store(out, clean)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_three_workers_killed_at_random_the_run_completes_identically_and_logs_each_loss(tmp_path, caplog):
    from geoseg_batch import predict_scene

    bundle = make_bundle(tmp_path / "m.keras")
    scene = write_scene(tmp_path / "scene.tif", (480, 480))  # 15 x 15 = 225 tiles of 32
    options = {"tile": 32, "float_output": True, "cog": False}
    rng = random.Random(14)
    with local_client(2, processes=True) as client:  # nanny-backed: a killed worker is restarted
        predict_scene(scene, bundle, tmp_path / "clean", client=client, **options)
        killed: list[int] = []
        running = threading.Event()

        # Three kills at random moments of the run, as tiles done go by (not by the clock, which a fast run
        # outruns): after a random number of tiles in each of three spans of the first 120 of 225.
        moments = [rng.randint(8 + 40 * span, 40 * (span + 1)) for span in range(3)]

        def chaos() -> None:
            running.wait()
            for moment in moments:
                while _done(tmp_path / "chaos") < moment:
                    if (tmp_path / "chaos").exists():
                        return  # published: the run is over
                    time.sleep(0.01)
                pids: list[int] = []
                while not pids:  # a worker that is up (restarted ones too, once registered again), from its nanny
                    if (tmp_path / "chaos").exists():
                        return
                    up = client.scheduler_info()["workers"]
                    pids = [n.pid for n in list(client.cluster.workers.values())
                            if n.pid and n.pid not in killed and n.worker_address in up]
                    time.sleep(0.05)
                victim = rng.choice(sorted(pids))
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        killer = threading.Thread(target=chaos, daemon=True)
        killer.start()
        running.set()
        with caplog.at_level(logging.INFO, logger="geoseg_batch"):
            result = predict_scene(scene, bundle, tmp_path / "chaos", client=client, **options)
        killer.join(timeout=60)
        client.wait_for_workers(2, timeout=120)  # every nanny done restarting before the cluster closes
    assert len(killed) == 3, "the run finished before three workers were killed; make the scene larger"
    losses = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost worker ")]
    assert len(losses) == 3, losses
    assert all("recomputed on the other workers" in m or "ran no task" in m for m in losses)
    assert result.summary["tiles_total"] == 225 and result.summary["tiles_computed"] == 225
    _assert_same_store(tmp_path / "chaos", tmp_path / "clean")

