"""Watching the cluster while a run waits on it: every wait bounded, every way it ends one line.

:func:`watched` is a context manager around the part of a run that waits on Dask futures
(predict's tiles and COGs, a mosaic's chunks and COGs). While it is open:

- a worker the scheduler loses is logged (WARNING on ``geoseg_batch.watch``) with what it
  takes down: the tasks that were running or queued there and the results it held, which
  the scheduler recomputes elsewhere. Learnt from the scheduler's ``remove-worker`` events
  (:meth:`distributed.Client.subscribe_topic`): nothing is polled, nothing runs per tile;
- a cluster with no live worker for ``no_worker_timeout_s`` (``cluster.no_worker_timeout_s``)
  ends the wait: the client's futures are cancelled and the run fails with
  :class:`NoLiveWorkerError`, naming the cluster. (Dask's own
  ``distributed.scheduler.no-workers-timeout`` is a scheduler setting, read when it starts:
  it cannot be set for an external scheduler, so the bound is kept here, client side; a
  scheduler configured with it fails the tasks with ``NoWorkerError``, translated the same);
- a lost scheduler (its futures cancelled with ``scheduler-connection-lost``, or the client
  no longer connected) is :class:`ClusterLostError`, and Ctrl-C is :class:`RunInterrupted`.

Each of these says what is saved and how to go on, from the run's ``saved`` callable
(predict: how many tiles are recorded as done, and that the same command resumes).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from asyncio import CancelledError  # a BaseException (Dask's FutureCancelledError is an Exception)
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from geoseg_batch.errors import RunError

log = logging.getLogger(__name__)

NOTHING_SAVED = "nothing was published; re-run the same command"
"""What a run that records no progress says is saved (and how to go on)."""


class ClusterLostError(RunError):
    """The scheduler went away during the run. Exit code 1."""


class NoLiveWorkerError(RunError):
    """The cluster had no live worker for ``cluster.no_worker_timeout_s``. Exit code 1."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what is saved and how to go on. Still a KeyboardInterrupt; exit code 130."""

    exit_code = 130


def saved_tiles(done: int, total: int, stage: Any) -> str:
    """What a tiled run says is saved: ``"N of M tiles are saved in STAGE; re-running the same command
    resumes"``."""
    return f"{done} of {total} tiles are saved in {stage}; re-running the same command resumes"


class ClusterWatch:
    """The state of one :func:`watched` block: live workers, the ones lost, whether the no-worker bound ran out."""

    def __init__(self, client: Any, no_worker_timeout_s: float, saved: Callable[[], str] | None = None,
                 check_interval_s: float = 0.5) -> None:
        self.client = client
        self.no_worker_timeout_s = float(no_worker_timeout_s)
        self.saved = saved
        self.check_interval_s = check_interval_s
        self.address = str(getattr(getattr(client, "scheduler", None), "address", None) or "the scheduler")
        self.dashboard = _dashboard(client)
        self.live: set[str] = set()
        self.lost: list[str] = []  # workers lost (unexpectedly) while watched, in order
        self.expired = False  # the no-worker bound ran out
        self._none_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- events (on the client's event loop)

    def on_event(self, event: tuple[float, Any]) -> None:
        """Handle one scheduler event of topic ``all``: track workers joining and leaving; log each loss."""
        _, message = event
        if not isinstance(message, dict) or "worker" not in message:
            return
        worker, action = str(message["worker"]), message.get("action")
        with self._lock:
            if action == "add-worker":
                self.live.add(worker)
                self._none_since = None
            elif action == "remove-worker":
                self.live.discard(worker)
                if not self.live and self._none_since is None:
                    self._none_since = time.monotonic()
            else:
                return
            live = len(self.live)
        if action == "add-worker":
            log.info("worker %s joined (%d live)", worker, live)
        elif not message.get("expected"):
            self.lost.append(worker)
            log.warning("lost worker %s: %s; %s", worker, _taken_down(message),
                        f"{_plural(live, 'worker')} left" if live else
                        f"no worker left: the run fails unless one joins within {self.no_worker_timeout_s:g} s")

    # -- the no-worker bound (a thread of its own)

    def _check(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            with self._lock:
                since = self._none_since
            if since is not None and time.monotonic() - since > self.no_worker_timeout_s:
                self.expired = True
                _cancel_all(self.client, "no live worker for %g s" % self.no_worker_timeout_s)
                return

    def start(self) -> ClusterWatch:
        """Subscribe to the scheduler's events, read who is alive now, start the no-worker check."""
        self.client.subscribe_topic("all", self.on_event)
        workers = set(self.client.nthreads())
        with self._lock:
            self.live |= workers
            if not self.live:
                self._none_since = time.monotonic()
        self._thread = threading.Thread(target=self._check, name="geoseg-cluster-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the check and unsubscribe (quietly, when the scheduler is gone)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(Exception):
            if self.client.status == "running":
                self.client.unsubscribe_topic("all")

    # -- how the block ended

    def remedy(self) -> str:
        """What is saved and how to go on (the run's ``saved``, or :data:`NOTHING_SAVED`)."""
        if self.saved is None:
            return NOTHING_SAVED
        try:
            return self.saved()
        except Exception:  # counting must never hide the failure itself
            return NOTHING_SAVED

    def translated(self, error: BaseException) -> BaseException | None:
        """The one-line error ``error`` (raised inside the block) stands for, or None to let it through."""
        if isinstance(error, RunInterrupted) or not isinstance(error, (Exception, KeyboardInterrupt, CancelledError)):
            return None  # already one line, or an exit (SystemExit, GeneratorExit) that must go through
        if isinstance(error, KeyboardInterrupt):
            return RunInterrupted(f"interrupted; {self.remedy()}")
        if self.expired or type(error).__name__ == "NoWorkerError":
            return NoLiveWorkerError(
                f"the cluster at {self.address} (dashboard {self.dashboard or 'none'}) has had no live worker for "
                f"{self.no_worker_timeout_s:g} s (cluster.no_worker_timeout_s); {self.remedy()} once workers run "
                "again (their logs say why they stopped)")
        if isinstance(error, Exception) and getattr(error, "exit_code", None) is not None:
            return None  # our own errors already say what happened
        if "scheduler-connection-lost" in str(error) or getattr(self.client, "status", "running") != "running":
            return ClusterLostError(f"lost the scheduler at {self.address} during the run; {self.remedy()} "
                                    "(on a restarted or new cluster)")
        return None


@contextlib.contextmanager
def watched(client: Any | None, no_worker_timeout_s: float = 60.0,
            saved: Callable[[], str] | None = None) -> Iterator[ClusterWatch | None]:
    """A block whose waits on ``client``'s cluster are watched (see the module docstring); yields its
    :class:`ClusterWatch` (None without a client: then only Ctrl-C is translated).

    ``saved()`` says what is saved and how to go on, e.g. :func:`saved_tiles`; it is called only
    when the block fails.
    """
    watch = ClusterWatch(client, no_worker_timeout_s, saved) if client is not None else None
    if watch is not None:
        watch.start()
    try:
        yield watch
    except BaseException as error:
        if watch is None:
            if isinstance(error, KeyboardInterrupt) and not isinstance(error, RunInterrupted):
                raise RunInterrupted(f"interrupted; {saved() if saved else NOTHING_SAVED}") from None
            raise
        one_line = watch.translated(error)
        if one_line is None:
            raise
        raise one_line from None
    finally:
        if watch is not None:
            watch.stop()


def _taken_down(message: dict[str, Any]) -> str:
    """What a lost worker takes down, from its ``remove-worker`` event."""
    running = list(message.get("processing-tasks") or ())
    held = list(message.get("lost-computed-tasks") or ())
    if not running and not held:
        return "it ran no task of this run"
    parts = [f"{_plural(len(running), 'task')} running or queued there ({_keys(running)})"] if running else []
    if held:
        parts.append(f"{_plural(len(held), 'result')} held there ({_keys(held)})")
    return " and ".join(parts) + " will be recomputed on the other workers (tiles written before stay saved)"


_KEY_FORMS = (  # the task keys infer.segment and geo.mosaic name their tasks with, and what each one is
    (re.compile(r"predict-\d+-(?P<scene>.+)-(?P<r0>\d+)-(?P<c0>\d+)-(?P<r1>\d+)-(?P<c1>\d+)"),
     "{scene} tiles {r0},{c0}..{r1},{c1}"),
    (re.compile(r"blend-\d+-(?P<scene>.+)-(?P<r>\d+)-(?P<c>\d+)"), "{scene} tile {r},{c} (blend)"),
    (re.compile(r"mosaic-[0-9a-f]+-(?P<r>\d+)-(?P<c>\d+)"), "mosaic chunk {r},{c}"),
)


def _task(key: Any) -> str:
    """What the task of ``key`` works on ("scene tiles 0,4..3,5"), or its key's name."""
    name = str(key[0] if isinstance(key, tuple) else key)
    for pattern, form in _KEY_FORMS:
        found = pattern.fullmatch(name)
        if found:
            return form.format(**found.groupdict())
    return name


def _keys(keys: Iterable[Any], shown: int = 4) -> str:
    names = list(dict.fromkeys(sorted(_task(key) for key in keys)))
    return "; ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _dashboard(client: Any) -> str | None:
    from geoseg_batch.cluster import dashboard_url

    return dashboard_url(client)


def _cancel_all(client: Any, reason: str) -> None:
    """Cancel every future ``client`` holds (from any thread): whatever waits on them raises CancelledError."""
    from distributed import Future

    with contextlib.suppress(Exception):
        futures = [Future(key, client) for key in list(client.futures)]
        client.cancel(futures, reason="no-workers", msg=reason)
