"""The lease on an output: exclusive, named holder, renewed by a heartbeat, released on every way out, a gone
holder's lease taken over (logged), --wait bounded; Publication takes it for the run."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from geoseg_batch.errors import OutputLockedError
from geoseg_batch.io.lease import Holder, Lease, acquire_lease, lock_path
from geoseg_batch.io.publication import Publication


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(out, **fields) -> None:
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time() - 5,
              "expires": time.time() + 60, "token": "theirs", **fields}
    lock_path(out).parent.mkdir(parents=True, exist_ok=True)
    lock_path(out).write_text(json.dumps(record))


def test_the_lock_lies_beside_the_output_and_names_its_holder(tmp_path):
    out = tmp_path / "out"
    with acquire_lease(out) as lease:
        assert lease.path == tmp_path / ".out.lock" and not out.exists()
        holder = Holder.loads(lease.path.read_text())
        assert holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()
        assert holder.started <= time.time() < holder.expires
    assert not lease.path.exists(), "released"


def test_a_second_taker_is_refused_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with acquire_lease(out):
        started = time.monotonic()
        with pytest.raises(OutputLockedError) as refused:
            acquire_lease(out)
        assert time.monotonic() - started < 2
    message = str(refused.value)
    assert str(out) in message and f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert "since" in message and "--wait" in message and refused.value.exit_code == 2


def test_wait_waits_for_the_holder_and_is_bounded(tmp_path, caplog):
    out = tmp_path / "out"
    first = acquire_lease(out)
    threading.Timer(0.6, first.release).start()
    with caplog.at_level(logging.INFO, logger="geoseg_batch.io.lease"):
        second = acquire_lease(out, wait=True, wait_timeout_s=30)
    assert second.waited_s >= 0.5 and "waiting for the run writing there" in caplog.text
    with pytest.raises(OutputLockedError, match=r"after waiting \d+ s.*--wait-timeout-s"):
        acquire_lease(out, wait=True, wait_timeout_s=0.3)
    second.release()


@pytest.mark.parametrize("stale", ["dead pid", "expired"])
def test_a_gone_holders_lock_is_taken_over_with_a_log_line(tmp_path, caplog, stale):
    out = tmp_path / "out"
    if stale == "dead pid":
        _write_lock(out, pid=_dead_pid())
    else:  # another host's run whose lease ran out
        _write_lock(out, host="elsewhere", expires=time.time() - 10)
    with caplog.at_level(logging.WARNING, logger="geoseg_batch.io.lease"), acquire_lease(out) as lease:
        assert lease.took_over is not None and lease.took_over.token == "theirs"
        assert Holder.loads(lease.path.read_text()).pid == os.getpid()
    assert "taking over the lock of a run that is gone" in caplog.text
    assert ("no longer running" if stale == "dead pid" else "expired") in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing left beside the output"


def test_a_live_holder_on_another_host_is_respected_until_its_lease_expires(tmp_path):
    out = tmp_path / "out"
    _write_lock(out, host="elsewhere", pid=_dead_pid())  # a pid that means nothing here
    with pytest.raises(OutputLockedError, match="host elsewhere"):
        acquire_lease(out)


def test_the_heartbeat_renews_and_notices_a_lost_lease(tmp_path):
    out = tmp_path / "out"
    lease = acquire_lease(out, ttl_s=0.2)
    first = lease.holder.expires
    time.sleep(0.3)
    assert Holder.loads(lease.path.read_text()).expires > first, "renewed while the run lives"
    _write_lock(out, token="usurper")  # taken over by another run (this one looked gone)
    with pytest.raises(OutputLockedError, match="lost its lock"):
        lease.confirm()
    lease.release()
    assert Holder.loads(lock_path(out).read_text()).token == "usurper", "another run's lock is left alone"


def test_publication_holds_the_lease_and_releases_it_on_every_exit(tmp_path):
    out = tmp_path / "out"
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error), Publication(out, "k1"):
            assert lock_path(out).exists()
            with pytest.raises(OutputLockedError):
                Publication(out, "k1").__enter__()
            raise error("stop")
        assert not lock_path(out).exists()
    with Publication(out, "k1") as publication:
        publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})
    assert not lock_path(out).exists() and json.loads((out / "manifest.json").read_text())["summary"]["run_key"] == "k1"
    assert Publication(out, "k1").finished() is not None and Publication(out, "k2").finished() is None


def test_a_publication_that_lost_its_lease_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputLockedError, match="published nothing"), Publication(out, "k1") as publication:
        (publication.stage / "a.txt").write_text("a")
        _write_lock(out, token="usurper")
    assert not out.exists()


def test_a_handed_in_lease_is_the_callers_to_release(tmp_path):
    out = tmp_path / "out"
    with acquire_lease(out) as lease:
        with Publication(out, "k1", lease=lease) as publication:
            publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})
        assert lock_path(out).exists() and isinstance(lease, Lease)
    assert not lock_path(out).exists()
