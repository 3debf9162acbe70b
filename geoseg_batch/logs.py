"""Where a run's messages go: ours on the terminal, every library's in a log file beside the outputs.

The ``geoseg_batch`` logger writes its message alone to stderr (INFO; WARNING with
``--quiet``). Everything else is kept off the terminal by :func:`run_logging`:

* Python records of other loggers (tensorflow, absl, keras, distributed, tornado, bokeh,
  asyncio) and Python warnings (``py.warnings``) go to the root logger, which writes them
  to the log file (INFO and above, timestamped);
* what native code writes to file descriptor 2 (TensorFlow's and absl's start-up lines,
  the oneDNN notice, which ``TF_CPP_MIN_LOG_LEVEL`` does not hide) goes there too: fd 2
  points at the log file for the run, while ``sys.stderr`` keeps the terminal. Processes
  started during the run inherit that fd 2, so the embedded cluster's workers (forked from
  the fork server, spawned, or dask-cuda's) write their start-up chatter and Dask's worker
  log lines (at INFO: :func:`cluster_log_level`) to the same file.

The log file is ``.geoseg-batch-logs/OUT.log`` beside the job's output directory ``OUT``
(not inside it: outputs are built in a staging directory and renamed into place; not a
sibling of it either, so that a failed run leaves nothing named after ``OUT``). Runs append to
it (one past :data:`LOG_ROTATE_BYTES` is first moved to ``OUT.log.1``), so a second run refused
by the lock of the one writing ``OUT`` leaves that run's log alone; the run that created the
file removes it (with the directories it created) when nothing was written to it.
Commands without an output directory (info, validate) have no log file: library records at
WARNING and above still reach stderr, and native start-up lines at INFO/WARNING level are
dropped (errors are replayed on stderr when the command ends).

With ``-v``/``--verbose`` or ``--debug``, library records (INFO and above) also reach
stderr, and native output is left on the terminal. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2
(TensorFlow's C++ INFO and WARNING lines off); ``TF_ENABLE_ONEDNN_OPTS`` is never set, as it
changes numerics: only its notice is hidden.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

OURS = "geoseg_batch"
"""The package's logger: the only one shown on the terminal by default."""

LOG_DIR = ".geoseg-batch-logs"
"""The hidden directory, beside a run's output directory, that holds its log file."""
LOG_ROTATE_BYTES = 8 << 20
"""A log file past this size is moved to ``OUT.log.1`` when the next run starts (runs append to it)."""
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TERMINAL_FORMAT = "%(name)s %(levelname)s: %(message)s"
"""Library records on stderr (ours are the message alone)."""

CAPTURE_WARNINGS = True
"""Whether :func:`run_logging` sends Python warnings to the log (the test suite turns it off, so that
pytest keeps recording the warnings of in-process CLI runs)."""

_active: dict[str, Any] = {"file": None, "loud": False}
_NATIVE_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called|[IW]\d{4} )")
_NATIVE_RECORD = re.compile(r"^[IWEF]\d{4} ")


def log_path_for(out: str | Path) -> Path:
    """The log file of a run writing to ``out``: ``.geoseg-batch-logs/OUT.log`` in OUT's parent directory; for an
    ``out`` in object storage (``s3://bucket/a/b``), ``.geoseg-batch-logs/s3-bucket-a-b.log`` in the working
    directory (a log is this machine's: it is not published with the results)."""
    from geoseg_batch.io.urls import is_url, split

    if is_url(str(out)):
        scheme, rest = split(str(out))
        return Path(LOG_DIR) / f"{scheme}-{rest.strip('/').replace('/', '-')}.log"
    out = Path(out)
    return out.parent / LOG_DIR / f"{out.name}.log"


def quiet_tensorflow_env() -> None:
    """Set ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user chose a level; returns None. Call before importing TF.

    Processes started later (the embedded cluster's workers, its fork server) inherit it.
    ``TF_ENABLE_ONEDNN_OPTS`` is left alone on purpose: it changes numerical results.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cluster_log_level() -> int:
    """Level for an embedded cluster's ``silence_logs``: INFO inside :func:`run_logging` when library
    lines go to a log file or the user asked for them (``-v``), else ERROR."""
    return logging.INFO if _active["file"] is not None or _active["loud"] else logging.ERROR


def run_out(args: argparse.Namespace) -> Path | str | None:
    """The output directory a parsed command line writes to, or None (info, validate, a job that fails to load, a
    dry run: it writes nothing, not even a log file; library warnings go to stderr then).

    ``--out`` when given; for ``demo`` its default; for ``submit JOB`` / ``train JOB`` the job file's ``out``.
    """
    if getattr(args, "dry_run", False):
        return None
    out = getattr(args, "out", None)
    if out:
        return out if isinstance(out, str) and "://" in out else Path(out)
    if args.command == "demo":
        from geoseg_batch.config import DemoJob

        return Path(DemoJob.model_fields["out"].default)
    job = getattr(args, "job", None) if args.command in ("submit", "train") else None
    if not job:
        return None
    from geoseg_batch.jobfile import load_job

    try:
        loaded = load_job(job)
        if getattr(loaded, "dry_run", False):
            return None
        return loaded.out if isinstance(loaded.out, str) and "://" in loaded.out else Path(loaded.out)
    except Exception:  # the command itself reports a bad job file, in one line
        return None


def log_pointer(path: Path | None) -> str:
    """`` (log: PATH)`` for an error line when the run's log file holds something, else ''."""
    try:
        return f" (log: {path})" if path is not None and path.stat().st_size > 0 else ""
    except OSError:
        return ""


@contextlib.contextmanager
def run_logging(out: str | Path | None, verbose: bool = False, debug: bool = False,
                quiet: bool = False) -> Iterator[Path | None]:
    """Route a command's logging (see the module docstring) while open; yields the log file, or None.

    ``out``: the command's output directory (None: no log file). Everything is put back on exit.
    """
    loud = verbose or debug
    quiet_tensorflow_env()
    path, created = _fresh_log_file(out) if out is not None else (None, [])
    with contextlib.ExitStack() as stack:
        if path is not None:
            stack.callback(_remove_if_empty, path, created)  # last, once every writer is closed
        if not loud:
            stack.enter_context(_native_stderr_to(path))
        stack.enter_context(_our_logger(quiet))
        stack.enter_context(_library_logging(path, loud))
        if not debug:
            stack.enter_context(_chatty_loggers_quiet())
        previous = dict(_active)
        _active.update(file=path, loud=loud)
        stack.callback(_active.update, previous)
        yield path


@contextlib.contextmanager
def native_start_up_hidden() -> Iterator[None]:
    """While open, TensorFlow's and absl's native INFO/WARNING lines on fd 2 are dropped (anything else
    native code prints there is replayed on stderr at the end); yields None. E.g. around importing TF."""
    with _native_stderr_to(None):
        yield


def _fresh_log_file(out: str | Path) -> tuple[Path | None, list[Path]]:
    """The log file of ``out``, made if missing (rotated when past :data:`LOG_ROTATE_BYTES`): (the file, or None
    when it cannot be written; what this run created for it: the file and its directories, innermost first)."""
    path = log_path_for(out)
    created = [parent for parent in (path, path.parent, *path.parent.parents) if not parent.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
            created.insert(0, path)
        path.touch()
    except OSError:
        return None, []
    return path, created


def _remove_if_empty(path: Path, created: list[Path]) -> None:
    """Delete the log file when this run ``created`` it and it is still empty, with the directories created for
    it when left empty; returns None. (A file another run made is theirs: it may be writing to it.)"""
    with contextlib.suppress(OSError):
        if path not in created or path.stat().st_size > 0:
            return
        path.unlink()
        for directory in dict.fromkeys(created[1:]):  # innermost first, up to a non-empty one
            directory.rmdir()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (the terminal, or a test's capture)."""

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _is_ours(name: str) -> bool:
    """Whether a logger name is ``geoseg_batch`` or one of its children."""
    return name == OURS or name.startswith(OURS + ".")


def _not_ours(record: logging.LogRecord) -> bool:
    """Whether a record comes from a library (ours have their own terminal handler)."""
    return not _is_ours(record.name)


@contextlib.contextmanager
def _our_logger(quiet: bool) -> Iterator[logging.Logger]:
    """The ``geoseg_batch`` logger: message-only on stderr, INFO (WARNING when ``quiet``); yields it."""
    logger = logging.getLogger(OURS)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


CHATTY_LOGGERS = ("botocore.credentials",)
"""Library loggers held at WARNING during a run: botocore's says at INFO, on each ``rasterio.open`` while AWS keys
are in the environment (rasterio then makes an AWS session, even for a local file), that it found them; that line
alone would keep the log file of a run that stops at once, and of a dry run."""


@contextlib.contextmanager
def _chatty_loggers_quiet() -> Iterator[None]:
    """While open, the loggers of :data:`CHATTY_LOGGERS` pass WARNING and above only; yields None."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _library_logging(path: Path | None, loud: bool) -> Iterator[None]:
    """Root handlers: the log file (all records, INFO+) and stderr for library records (INFO+ when
    ``loud``, WARNING+ when there is no file, none otherwise); Python warnings logged. Yields None."""
    root = logging.getLogger()
    handlers: list[logging.Handler] = []
    if path is not None:
        handlers.append(logging.FileHandler(path, mode="a", encoding="utf-8", delay=True))
        handlers[-1].setFormatter(logging.Formatter(FILE_FORMAT))
    if loud or path is None:
        handlers.append(_StderrHandler())
        handlers[-1].setLevel(logging.INFO if loud else logging.WARNING)
        handlers[-1].setFormatter(logging.Formatter(TERMINAL_FORMAT))
        handlers[-1].addFilter(_not_ours)
    level = root.level
    was_capturing = getattr(logging, "_warnings_showwarning", None) is not None
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    if CAPTURE_WARNINGS:
        logging.captureWarnings(True)
    try:
        with _libraries_propagating():
            yield
    finally:
        if CAPTURE_WARNINGS and not was_capturing:
            logging.captureWarnings(False)
        root.setLevel(level)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def _libraries_propagating() -> Iterator[None]:
    """Library loggers with their own console handler (Dask adds one to stderr when imported before
    any logging setup) hand their records to the root logger instead while open; yields None."""
    taken: list[tuple[logging.Logger, logging.Handler, bool]] = []
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or _is_ours(name):
            continue
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler and handler.stream not in (sys.stdout, sys.__stdout__):
                taken.append((logger, handler, logger.propagate))
                logger.removeHandler(handler)
                logger.propagate = True
    try:
        yield
    finally:
        for logger, handler, propagate in taken:
            logger.addHandler(handler)
            logger.propagate = propagate


@contextlib.contextmanager
def _native_stderr_to(path: Path | None) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` (None: a temporary file, whose errors are replayed at the end)
    while ``sys.stderr`` keeps writing to the terminal; yields None. A no-op without a usable fd 2."""
    try:
        os.fstat(2)
    except OSError:
        yield
        return
    target = open(path, "ab", buffering=0) if path is not None else tempfile.TemporaryFile(buffering=0)
    for stream in (sys.stderr, sys.__stderr__):
        _flush(stream)
    saved = os.dup(2)
    os.dup2(target.fileno(), 2)
    previous, ours = sys.stderr, None
    if _writes_to_fd2(previous):  # a real stderr (not a test's capture): keep it on the terminal
        ours = open(os.dup(saved), "w", buffering=1, encoding=getattr(previous, "encoding", None),
                    errors="backslashreplace")
        sys.stderr = ours
    try:
        yield
    finally:
        for stream in (sys.stderr, previous, sys.__stderr__):
            _flush(stream)
        os.dup2(saved, 2)
        os.close(saved)
        if ours is not None:
            if sys.stderr is ours:
                sys.stderr = previous
            ours.close()
        if path is None:
            _replay_native_errors(target)
        target.close()


def _flush(stream: Any) -> None:
    """Flush ``stream`` if it is a stream that can be flushed; returns None."""
    with contextlib.suppress(Exception):
        stream.flush()


def _writes_to_fd2(stream: Any) -> bool:
    """Whether ``stream`` is a file object on file descriptor 2."""
    try:
        return stream is not None and stream.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _replay_native_errors(captured: IO[bytes]) -> None:
    """Write to stderr what native code printed, less TensorFlow's and absl's INFO/WARNING lines."""
    captured.seek(0)
    kept, dropping = [], False
    for line in captured.read().decode("utf-8", "backslashreplace").splitlines(keepends=True):
        if _NATIVE_NOISE.match(line):
            dropping = True
        elif _NATIVE_RECORD.match(line):
            dropping = False
        if not dropping:
            kept.append(line)
    if kept:
        sys.stderr.write("".join(kept))
        _flush(sys.stderr)
