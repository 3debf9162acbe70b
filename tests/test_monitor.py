"""Monitoring: tile progress, track() over Dask futures, run summary, the dashboard and its /metrics."""

from __future__ import annotations

import io
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from geoseg_batch import cluster as cluster_module
from geoseg_batch.cluster import ClusterUnreachableError, connect, dashboard_url, is_loopback, metrics_url
from geoseg_batch.config import ClusterSpec
from geoseg_batch.monitor import RunSummary, TileProgress, format_bytes, format_duration, track
from tests.helpers import local_client

ROOT = Path(__file__).resolve().parents[1]
LINK_LINE = re.compile(r"dask dashboard: (\S+) \(Prometheus metrics: (\S+)\)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# --------------------------------------------------------------------------- TileProgress


def test_progress_is_quiet_when_stderr_is_not_a_terminal():
    stream = io.StringIO()
    with TileProgress(10, 5.0, stream=stream, quiet=False) as progress:
        for _ in range(10):
            progress.advance(1, 0.5)
    assert stream.getvalue() == ""
    assert (progress.tiles_done, progress.megapixels_done, progress.redraws) == (10, 5.0, 0)


def test_progress_is_quiet_when_asked_even_on_a_terminal_or_forced():
    for kwargs in ({"stream": TTY(), "quiet": True}, {"stream": io.StringIO(), "quiet": True, "force": True}):
        with TileProgress(3, **kwargs) as progress:
            progress.advance(3)
        assert kwargs["stream"].getvalue() == ""


def test_progress_follows_the_cli_quiet_flag():
    logger = logging.getLogger("geoseg_batch")
    before = logger.level
    try:
        logger.setLevel(logging.WARNING)  # what `geoseg-batch --quiet` does
        assert not TileProgress(3, stream=TTY()).enabled
        logger.setLevel(logging.INFO)
        assert TileProgress(3, stream=TTY()).enabled
    finally:
        logger.setLevel(before)


def test_progress_renders_on_a_terminal_and_when_forced():
    clock = FakeClock()
    for stream, force in ((TTY(), False), (io.StringIO(), True)):
        with TileProgress(10, 20.0, stream=stream, force=force, quiet=False, clock=clock) as progress:
            clock.now += 2.0
            progress.advance(2, 4.0)
        text = stream.getvalue()
        assert text.startswith("\r") and text.endswith("\n")
        last = text.rstrip("\n").split("\r")[-1].rstrip()
        assert last.startswith("tiles 2/10  20%")
        assert "4.0/20.0 Mpx" in last and "2.00 Mpx/s" in last and "ETA 0:08" in last  # 16 Mpx left at 2 Mpx/s


def test_progress_redraws_at_most_a_few_times_per_second():
    clock = FakeClock()
    stream = TTY()
    with TileProgress(1000, stream=stream, quiet=False, min_interval_s=0.25, clock=clock) as progress:
        for _ in range(1000):  # 1000 tiles in 1 s
            clock.now += 0.001
            progress.advance(1, 0.01)
    # first draw, about one per 0.25 s, and the final one
    assert 3 <= progress.redraws <= 7
    assert stream.getvalue().count("\r") == progress.redraws
    assert "tiles 1000/1000 100%" in stream.getvalue() and "ETA 0:00" in stream.getvalue()


def test_progress_figures():
    clock = FakeClock()
    progress = TileProgress(4, stream=io.StringIO(), quiet=True, clock=clock).start()
    assert progress.eta_s is None and progress.mpx_per_s == 0.0
    clock.now += 3.0
    progress.advance(1, 1.5)
    assert progress.eta_s == pytest.approx(9.0)  # no Mpx total: from the tile rate
    assert progress.mpx_per_s == pytest.approx(0.5)
    progress.advance(3)
    assert progress.eta_s == 0.0
    progress.close()


def test_formatting_helpers():
    assert format_duration(75.2) == "1:15" and format_duration(3725) == "1:02:05"
    assert format_duration(None) == format_duration(float("inf")) == "--:--"
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(512) == "512 B" and format_bytes(None) == "n/a"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


# --------------------------------------------------------------------------- track


def _slow_square(x: int, delay: float) -> list[int]:
    time.sleep(delay)
    return [x * x] * (x + 1)  # x + 1 "tiles"


def _fail(x: int) -> int:
    raise ValueError(f"tile {x} failed")


@pytest.fixture(scope="module")
def threaded_client():
    with local_client(1, processes=False, threads_per_worker=4) as client:
        yield client


def test_track_returns_results_in_input_order_and_counts_tiles(threaded_client):
    delays = [0.4, 0.05, 0.25, 0.0]  # completion order differs from submission order
    futures = [threaded_client.submit(_slow_square, x, d, pure=False) for x, d in enumerate(delays)]
    progress = TileProgress(10, 1.0, stream=io.StringIO(), quiet=True)
    with progress:
        results = track(futures, progress, pixels_of=lambda r: (len(r), 0.1 * len(r)))
    assert results == [[0], [1, 1], [4, 4, 4], [9, 9, 9, 9]]
    assert progress.tiles_done == 10 and progress.megapixels_done == pytest.approx(1.0)


def test_track_with_repeated_futures_and_without_progress(threaded_client):
    a = threaded_client.submit(_slow_square, 2, 0.0)
    b = threaded_client.submit(_slow_square, 1, 0.0)
    assert track([a, b, a]) == [[4, 4, 4], [1, 1], [4, 4, 4]]
    progress = TileProgress(3, stream=io.StringIO(), quiet=True)
    track([a, b, a], progress)  # default: one tile per distinct future
    assert progress.tiles_done == 2


def test_track_raises_the_task_error(threaded_client):
    futures = [threaded_client.submit(_slow_square, 1, 0.0), threaded_client.submit(_fail, 7)]
    with pytest.raises(ValueError, match="tile 7 failed"):
        track(futures, TileProgress(2, stream=io.StringIO(), quiet=True))


# --------------------------------------------------------------------------- RunSummary


def test_run_summary_dict_and_format():
    summary = RunSummary.of(scenes=2, tiles_total=400, tiles_computed=396, megapixels=26.2144, wall_s=12.5,
                            peak_worker_rss_bytes=3 * 1024**3)
    assert summary.as_dict() == {
        "scenes": 2, "tiles_total": 400, "tiles_computed": 396, "tiles_skipped": 4, "megapixels": 26.214,
        "wall_s": 12.5, "mpx_per_s": 2.0972, "peak_worker_rss_bytes": 3 * 1024**3,
    }
    text = summary.format()
    assert text.splitlines()[0] == "run summary"
    for expected in ("scenes", "400 (396 computed, 4 skipped)", "26.214", "12.5 s (0:12)", "2.097 Mpx/s",
                     "3.0 GiB"):
        assert expected in text
    assert len(text.splitlines()) == 7
    assert "n/a" in RunSummary.of(1, 1, 1, 0.1, 0.0).format()  # no RSS, no division by zero
    resumed = RunSummary.of(1, 100, 60, 1.0, 2.0, tiles_skipped=5)  # 35 tiles were done by an earlier run
    assert resumed.tiles_skipped == 5 and "100 (60 computed, 5 skipped, 35 done before)" in resumed.format()


# --------------------------------------------------------------------------- links and warnings


class StubClient:
    def __init__(self, link: str | None = None, error: Exception | None = None) -> None:
        self._link, self._error = link, error

    @property
    def dashboard_link(self) -> str | None:
        if self._error is not None:
            raise self._error
        return self._link


def test_dashboard_and_metrics_urls():
    client = StubClient("http://127.0.0.1:8787/status")
    assert dashboard_url(client) == "http://127.0.0.1:8787/status"
    assert metrics_url(client) == "http://127.0.0.1:8787/metrics"
    proxied = StubClient("https://hub.example/user/me/proxy/8787/status")
    assert metrics_url(proxied) == "https://hub.example/user/me/proxy/8787/metrics"
    assert metrics_url(StubClient("http://h:1/other")) == "http://h:1/metrics"
    for none in (StubClient(""), StubClient(None), StubClient(error=KeyError("dashboard"))):
        assert dashboard_url(none) is None and metrics_url(none) is None


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("192.168.0.7", False),
])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_exposed_hosts_from_bound_sockets_or_configured_address():
    exposed = cluster_module._exposed_hosts
    assert exposed(["127.0.0.1"], ":0") == []  # what is bound wins over what was asked
    assert exposed(["0.0.0.0"], "127.0.0.1:0") == ["0.0.0.0"]
    assert exposed(None, "127.0.0.1:0") == [] and exposed(None, "localhost:8787") == []
    assert exposed(None, ":8787") == ["0.0.0.0"] and exposed(None, "0.0.0.0:0") == ["0.0.0.0"]
    assert exposed(None, "10.1.2.3:8787") == ["10.1.2.3"]


def test_external_scheduler_dashboard_beyond_localhost_is_a_warning(caplog):
    caplog.set_level(logging.INFO, logger="geoseg_batch.cluster")
    cluster_module._announce_external(StubClient("http://127.0.0.1:8787/status"), "tcp://127.0.0.1:8786")
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "http://127.0.0.1:8787/status" in caplog.text and "http://127.0.0.1:8787/metrics" in caplog.text
    caplog.clear()
    cluster_module._announce_external(StubClient("http://10.1.2.3:8787/status"), "tcp://10.1.2.3:8786")
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    message = warning[0].getMessage()
    assert "10.1.2.3" in message and "no login" in message and "--dashboard-address 127.0.0.1" in message


def test_unreachable_scheduler_is_one_line_after_the_timeout():
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError, match=r"did not answer within 1 s") as caught:
        with connect(ClusterSpec(scheduler="tcp://127.0.0.1:9", timeout_s=1)):
            pass
    assert time.monotonic() - started < 20
    assert "\n" not in str(caught.value)


@pytest.mark.cluster
def test_model_workers_start_with_tensorflow_imported_and_come_back_after_a_kill():
    import signal

    def imported() -> bool:
        return "tensorflow" in sys.modules and "geoseg_batch.infer.segment" in sys.modules

    with connect(ClusterSpec(workers=2), cluster_module.MODEL_WORKER_IMPORTS) as client:
        assert all(client.run(imported).values())  # inherited from the fork server, before any task
        victim = sorted(client.run(os.getpid).values())[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the nanny starts a new worker (spawned, as Dask does by default)
            pids = set(client.run(os.getpid, on_error="ignore").values())
            if len(pids) == 2 and victim not in pids:
                break
            time.sleep(0.2)
        assert len(pids) == 2 and victim not in pids
        assert client.submit(sum, [1, 2], pure=False).result() == 3


# --------------------------------------------------------------------------- live dashboard


def _get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET without any proxy from the environment, following redirects."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8", "replace")


def _poll(url: str, deadline_s: float = 30.0) -> tuple[int, str]:
    """First answer of ``url`` within ``deadline_s`` (connection errors are retried)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {deadline_s} s: {exc}") from exc
            time.sleep(0.2)


def _dask_series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("dask_")]


@pytest.mark.cluster
def test_connect_logs_a_local_dashboard_that_answers_with_metrics(caplog):
    caplog.set_level(logging.INFO, logger="geoseg_batch.cluster")
    with connect(ClusterSpec(workers=1)) as client:
        match = LINK_LINE.search(caplog.text)
        assert match, caplog.text
        link, metrics = match.groups()
        assert link == dashboard_url(client) and metrics == metrics_url(client)
        assert link.startswith("http://127.0.0.1:")
        assert cluster_module._bound_hosts(client.cluster) == ["127.0.0.1"]  # loopback only by default
        status, page = _poll(link)
        assert status == 200 and "bokeh" in page.lower()  # the real dashboard, not "Dask needs bokeh"
        status, text = _poll(metrics)
        assert status == 200 and _dask_series(text), text[:300]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.cluster
def test_connect_warns_when_the_dashboard_listens_beyond_localhost(caplog, monkeypatch):
    # Pretend the server is bound to every interface rather than opening one on this shared machine.
    monkeypatch.setattr(cluster_module, "_bound_hosts", lambda cluster: ["0.0.0.0"])
    caplog.set_level(logging.INFO, logger="geoseg_batch.cluster")
    with connect(ClusterSpec(workers=1)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "0.0.0.0" in warnings[0] and "no login" in warnings[0]
    assert "cluster.dashboard_address" in warnings[0] and "ssh -L" in warnings[0]


@pytest.mark.cluster
def test_submit_prints_a_dashboard_link_that_answers_while_the_job_runs(tmp_path):
    """Acceptance: the link printed by `submit` answers HTTP 200 while the job runs; /metrics has dask_* series."""
    from tests.helpers import make_bundle, write_scene

    bundle = make_bundle(tmp_path / "m.keras", bands=3, depth=3, base_filters=4)
    scene = write_scene(tmp_path / "scene.tif", (1024, 1024), bands=3)
    out = tmp_path / "pred"
    job = tmp_path / "predict.yaml"
    job.write_text(yaml.safe_dump({"kind": "predict", "name": "dashboard-check", "scenes": [str(scene)],
                                   "model": str(bundle), "out": str(out), "tile": 64, "cluster": {"workers": 1}}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "geoseg_batch.cli", "submit", str(job)], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def read_stderr() -> None:
        for line in process.stderr:
            stderr.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        match = None
        while match is None:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, "submit ended without printing the dashboard link:\n" + "".join(stderr)
            match = LINK_LINE.search(line)
        link, metrics = match.groups()
        status, page = _poll(link)
        assert status == 200 and "bokeh" in page.lower()
        status, text = _poll(metrics)
        assert status == 200 and _dask_series(text), text[:300]
        # Still running: the staged output is published (manifest.json appears) only at the end.
        assert not (out / "manifest.json").exists()
        process.wait(timeout=300)
        stdout = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    assert process.returncode == 0, "".join(stderr)
    assert (out / "manifest.json").exists() and "manifest:" in stdout
    assert not any("warning" in line.lower() and "dashboard" in line.lower() for line in stderr)


def test_gpu_workers_follow_the_spec_and_dask_cuda(monkeypatch):
    import importlib.util

    from geoseg_batch.cluster import gpu_workers
    from geoseg_batch.config import ClusterSpec
    from geoseg_batch.errors import ConfigError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dask_cuda" else real_find_spec(name, *a))
    assert gpu_workers(ClusterSpec()) == 0  # no dask-cuda: a CPU cluster
    assert gpu_workers(ClusterSpec(gpus=0)) == 0
    with pytest.raises(ConfigError, match="dask-cuda is not installed"):
        gpu_workers(ClusterSpec(gpus=2))
