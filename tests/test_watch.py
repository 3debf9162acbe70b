"""watch.watched: lost workers logged with what they take down, the no-worker bound, lost scheduler, Ctrl-C."""

from __future__ import annotations

import logging
import pickle
import time
from types import SimpleNamespace

import pytest

from geoseg_batch.errors import RunError
from geoseg_batch.watch import (
    NOTHING_SAVED, ClusterLostError, ClusterWatch, NoLiveWorkerError, RunInterrupted, saved_tiles, watched,
)
from tests.helpers import local_client


def _stub_client(status: str = "running") -> SimpleNamespace:
    return SimpleNamespace(scheduler=SimpleNamespace(address="tcp://10.0.0.5:8786"), status=status,
                           dashboard_link="http://10.0.0.5:8787/status")


def test_a_lost_worker_is_logged_with_the_tiles_it_takes_down(caplog):
    watch = ClusterWatch(_stub_client(), 60)
    watch.live = {"tcp://a:1", "tcp://b:2"}
    with caplog.at_level(logging.INFO, logger="geoseg_batch"):
        watch.on_event((0.0, {"action": "remove-worker", "worker": "tcp://a:1", "expected": False,
                              "processing-tasks": ["predict-0-scene-4-0-7-1"],
                              "lost-computed-tasks": ["blend-0-scene-3-2", ("blend-0-scene-3-3", 0)]}))
        watch.on_event((1.0, {"action": "remove-worker", "worker": "tcp://b:2", "expected": True}))  # retired
    [lost] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = lost.getMessage()
    assert message.startswith("lost worker tcp://a:1: 1 task running or queued there (scene tiles 4,0..7,1)")
    assert "2 results held there (scene tile 3,2 (blend); scene tile 3,3 (blend))" in message
    assert "recomputed on the other workers" in message and "1 worker left" in message
    assert watch.lost == ["tcp://a:1"] and watch.live == set()


def test_ctrl_c_and_a_lost_scheduler_become_one_line_saying_what_is_saved():
    from distributed.client import FutureCancelledError

    saved = lambda: saved_tiles(57, 144, "/data/.out.staging-abc")  # noqa: E731
    watch = ClusterWatch(_stub_client(), 60, saved)
    interrupted = watch.translated(KeyboardInterrupt())
    assert isinstance(interrupted, RunInterrupted) and isinstance(interrupted, KeyboardInterrupt)
    assert str(interrupted) == ("interrupted; 57 of 144 tiles are saved in /data/.out.staging-abc; "
                                "re-running the same command resumes")
    assert interrupted.exit_code == 130
    lost = watch.translated(FutureCancelledError("k", "scheduler-connection-lost"))
    assert isinstance(lost, ClusterLostError) and isinstance(lost, RunError) and lost.exit_code == 1
    assert str(lost).startswith("lost the scheduler at tcp://10.0.0.5:8786 during the run; 57 of 144 tiles")
    assert type(pickle.loads(pickle.dumps(lost))) is ClusterLostError
    assert isinstance(ClusterWatch(_stub_client("connecting"), 60).translated(OSError("closed")), ClusterLostError)
    assert watch.translated(ValueError("a bug")) is None  # everything else goes through as it is
    assert watch.translated(RunError("ours")) is None


def test_without_a_client_only_ctrl_c_is_translated():
    with pytest.raises(RunInterrupted, match=f"^interrupted; {NOTHING_SAVED}$"):
        with watched(None):
            raise KeyboardInterrupt
    with pytest.raises(ValueError):
        with watched(None):
            raise ValueError("through")


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_a_cluster_without_workers_fails_the_wait_within_the_bound():
    with local_client(0, processes=False) as client:  # a cluster whose workers are all gone
        future = client.submit(sum, [1, 2], pure=False)
        started = time.monotonic()
        with pytest.raises(NoLiveWorkerError) as caught:
            with watched(client, no_worker_timeout_s=1.0, saved=lambda: "3 of 9 tiles are saved in X; go on"):
                future.result()
        waited = time.monotonic() - started
        assert 1.0 <= waited < 15
        message = str(caught.value)
        assert message.startswith(f"the cluster at {client.scheduler.address} (dashboard ")
        assert "has had no live worker for 1 s (cluster.no_worker_timeout_s); 3 of 9 tiles are saved in X" in message
        assert "\n" not in message
        client.cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        with watched(client, no_worker_timeout_s=1.0) as watch:  # with a worker, the same wait completes
            assert client.submit(sum, [1, 2], pure=False).result() == 3
        assert not watch.expired and watch.lost == []
