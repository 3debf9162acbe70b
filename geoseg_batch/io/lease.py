"""One run per output: a lease on an output location, held for the duration of a run.

A run that publishes into ``OUT`` first takes the lease ``.OUT.lock`` beside it (not inside:
``OUT`` is renamed into place, or is a link swapped to a new version). The lock file is created
exclusively (``O_EXCL``) and records its :class:`Holder`: host, pid, start time, and an expiry
that a heartbeat thread renews while the run lives (every quarter of :data:`LEASE_TTL_S`), so
it has the shape of the lease an object store gives (a record written with a conditional put,
renewed before it expires). A second run refuses at once with one line naming the holder
(:class:`~geoseg_batch.errors.OutputLockedError`, exit 2), or with ``wait`` polls until the
lease is free, for at most ``wait_timeout_s``. A lease whose holder is gone (same host and its
process dead, or the expiry passed without renewal) is taken over, with a log line. The lease
is released (the file removed) on every way out of the run: success, exception, Ctrl-C.

Where the record lives is a :class:`LeaseRecord`: :class:`FileRecord` (the lock file) here; the
object-storage lease (:class:`~geoseg_batch.io.object_storage.ObjectRecord`) is an object written
with conditional puts (``If-None-Match: *`` to take it, ``If-Match`` to renew or release it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Protocol

from geoseg_batch.errors import OutputLockedError

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0
"""How long a lease lives without renewal; the heartbeat renews it every quarter of that."""
WAIT_TIMEOUT_S = 3600.0
"""How long ``wait`` waits for the holder by default."""
POLL_S = 0.2
"""How often a waiting run looks at the lock again."""


def lock_path(out: Path | str) -> Path:
    """The lock file of output location ``out``: ``.NAME.lock`` beside it (links in ``out`` not followed)."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: host, pid, start time and expiry (seconds since the epoch), and a token of its own."""

    host: str
    pid: int
    started: float
    expires: float
    token: str

    @classmethod
    def this_process(cls, ttl_s: float) -> Holder:
        """A holder record for this process, expiring ``ttl_s`` from now."""
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), now, now + ttl_s, secrets.token_hex(8))

    def renewed(self, ttl_s: float) -> Holder:
        """The same holder, expiring ``ttl_s`` from now."""
        return replace(self, expires=time.time() + ttl_s)

    def describe(self) -> str:
        """'host H, pid P, since 2026-12-01 09:55:02 UTC'."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.started))
        return f"host {self.host}, pid {self.pid}, since {since} UTC"

    def gone(self) -> str | None:
        """Why the holder is gone (its process is dead, or the lease expired); None while it may be alive."""
        if self.host == socket.gethostname() and not process_alive(self.pid):
            return f"process {self.pid} is no longer running"
        if time.time() > self.expires:
            return f"its lease expired {time.time() - self.expires:.0f} s ago without renewal"
        return None

    def dumps(self) -> str:
        """The lock file's text (JSON)."""
        return json.dumps({"host": self.host, "pid": self.pid, "started": self.started, "expires": self.expires,
                           "token": self.token}) + "\n"

    @classmethod
    def loads(cls, text: str) -> Holder | None:
        """The holder recorded in a lock file's text; None when it is not a complete record."""
        try:
            record = json.loads(text)
            return cls(str(record["host"]), int(record["pid"]), float(record["started"]), float(record["expires"]),
                       str(record["token"]))
        except (ValueError, KeyError, TypeError):
            return None


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """A held lease on an output location; renewed by a heartbeat thread until :meth:`release`.

    ``waited_s``: how long taking it waited for another run; ``took_over``: the gone holder it replaced.
    """

    def __init__(self, out: object, record: LeaseRecord, holder: Holder, ttl_s: float, waited_s: float = 0.0,
                 took_over: Holder | None = None) -> None:
        self.out, self.record, self.holder, self.ttl_s = out, record, holder, ttl_s
        self.waited_s, self.took_over = waited_s, took_over
        self.lost_to: Holder | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lease {record.name}", daemon=True)
        self._heartbeat.start()

    @property
    def path(self) -> Path:
        """The lock file of a local lease (its record's path)."""
        return self.record.path  # type: ignore[attr-defined, no-any-return]

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except OSError as error:  # a brief outage of the filesystem: the next beat tries again
                log.warning("%s: could not renew the lock (%s); retrying", self.record.name, error)

    def renew(self) -> bool:
        """Push the expiry ``ttl_s`` ahead; whether the lease is still this run's (False: it was taken over)."""
        with self._guard:
            if self._stop.is_set() and self.lost_to is not None:
                return False
            current = Holder.loads(self.record.read() or "")
            renewed = self.holder.renewed(self.ttl_s)
            if current is None or current.token != self.holder.token or not self.record.replace(renewed.dumps()):
                self.lost_to = current or replace(self.holder, host="(nobody: the lock file was removed)")
                self._stop.set()
                log.error("%s: this run lost its lock to %s", self.out, self.lost_to.describe())
                return False
            self.holder = renewed
            return True

    def confirm(self) -> None:
        """Raise OutputLockedError when the lease was lost to another run (nothing may be published then)."""
        if self.lost_to is not None or not self.renew():
            assert self.lost_to is not None
            raise OutputLockedError(
                f"{self.out}: this run lost its lock to another run ({self.lost_to.describe()}) and published "
                f"nothing; let that run finish, then run the same command again (it resumes)")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still this run's (safe to call twice)."""
        self._stop.set()
        if self._heartbeat.is_alive() and self._heartbeat is not threading.current_thread():
            self._heartbeat.join()
        with self._guard:
            current = Holder.loads(self.record.read() or "")
            if current is not None and current.token == self.holder.token:
                self.record.remove()


def acquire_lease(out: Path | str, *, wait: bool = False, wait_timeout_s: float = WAIT_TIMEOUT_S,
                  ttl_s: float = LEASE_TTL_S, record: LeaseRecord | None = None) -> Lease:
    """The lease on output location ``out``, held (and renewed) until released; kept in ``record``
    (default: the lock file :func:`lock_path` beside a local ``out``).

    Held by a live run: OutputLockedError naming the holder at once, or with ``wait`` once
    ``wait_timeout_s`` passed; a gone holder's lease is taken over (logged).
    """
    record = record or FileRecord(lock_path(out))
    started, announced, took_over = time.monotonic(), None, None
    while True:
        holder = Holder.this_process(ttl_s)
        if record.create(holder.dumps()):
            return Lease(out, record, holder, ttl_s, time.monotonic() - started, took_over)
        text = record.read()
        if text is None:
            continue  # released meanwhile: try again
        other = Holder.loads(text)
        if other is None and time.monotonic() - started < 1.0:
            time.sleep(POLL_S)  # most likely being written this instant: read it again
            continue
        other = other or _unreadable(record, ttl_s)
        reason = other.gone()
        if reason is not None:
            log.warning("%s: taking over the lock of a run that is gone (%s: %s)", out, other.describe(), reason)
            took_over = other if record.take_over(text) else took_over
            continue
        waited = time.monotonic() - started
        if not wait or waited > wait_timeout_s:
            raise OutputLockedError(_locked_line(out, other, waited if wait else None))
        if announced != other.token:
            log.info("%s: waiting for the run writing there (%s), up to %g s", out, other.describe(), wait_timeout_s)
            announced = other.token
        time.sleep(POLL_S)


def _locked_line(out: object, holder: Holder, waited: float | None) -> str:
    """The refusal: who holds ``out``, and the fix (wait, or --wait; after a wait, a longer one)."""
    if waited is None:
        return (f"{out}: another run is writing there ({holder.describe()}); wait for it to finish, or pass "
                "--wait (wait: true) to wait for it and reuse its results")
    return (f"{out}: still in use by another run ({holder.describe()}) after waiting {waited:.0f} s; try again "
            "later, or give a longer --wait-timeout-s")


def _unreadable(record: LeaseRecord, ttl_s: float) -> Holder:
    """A stand-in holder for a lock record that is not complete (being written, or damaged): alive
    for ``ttl_s`` after it was last written."""
    written = record.written_at()
    return Holder(f"(unknown: {record.name} is unreadable)", -1, written, written + ttl_s, f"unreadable-{written}")


class LeaseRecord(Protocol):
    """Where a lease is recorded: created exclusively, read, replaced by its holder, taken over, removed."""

    name: str  # what messages call it

    def create(self, text: str) -> bool:
        """Create the record holding ``text`` only if there is none; whether it was created."""

    def read(self) -> str | None:
        """The record's text; None when there is none."""

    def replace(self, text: str) -> bool:
        """Replace the record (read or written last by this holder) with ``text``; False when it changed since."""

    def take_over(self, seen: str) -> bool:
        """Remove the record if it still holds ``seen`` (a gone holder's); whether it did."""

    def remove(self) -> None:
        """Remove the record (its holder releasing it)."""

    def written_at(self) -> float:
        """When the record was last written (seconds since the epoch; 0 when there is none)."""


class FileRecord:
    """A lease recorded in a lock file, created with ``O_EXCL`` and replaced by renames."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, str(path)

    def create(self, text: str) -> bool:
        """Create the lock file (and its folder) holding ``text`` unless it exists."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return create_exclusive(self.path, text)

    def read(self) -> str | None:
        """The lock file's text; None when it does not exist."""
        return read_text(self.path)

    def replace(self, text: str) -> bool:
        """Replace the lock file's text in one rename (its holder checked the token just before)."""
        replace_text(self.path, text)
        return True

    def take_over(self, seen: str) -> bool:
        """:func:`take_over` of the lock file."""
        return take_over(self.path, seen)

    def remove(self) -> None:
        """Remove the lock file."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def written_at(self) -> float:
        """The lock file's modification time."""
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0


def create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` only if it does not exist (O_EXCL); whether it was created."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def read_text(path: Path) -> str | None:
    """The text of ``path``; None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def replace_text(path: Path, text: str) -> None:
    """Replace ``path``'s content with ``text`` in one rename."""
    temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def take_over(path: Path, seen: str) -> bool:
    """Remove the lock file ``path`` if it still holds ``seen`` (a gone holder's record); whether it did.

    The file is first renamed aside (one contender wins); if what was moved is not ``seen`` (another
    run took the lease over first), it is put back with a link that cannot overwrite."""
    aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if aside.read_text() == seen:
            return True
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        return False
    finally:
        aside.unlink()
