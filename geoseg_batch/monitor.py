"""Watching a run: tile progress, results of Dask futures as they complete, run summary, peak memory.

- :class:`TileProgress`: a one-line progress display on stderr (tiles done/total, Mpx/s,
  ETA), redrawn at most a few times per second; silent when stderr is not a terminal,
  when asked to be quiet, or when the CLI runs with ``--quiet``.
- :func:`track`: gathers Dask futures as they complete, advancing a :class:`TileProgress`,
  and returns the results in the order of the futures given.
- :class:`RunSummary`: the figures a run reports (manifest ``summary``) and a short
  human-readable block of them.
- :class:`PeakMemory` samples, in a background thread, the resident memory of this process
  and of every child process (an embedded LocalCluster's workers and nanny processes), and
  keeps the peaks of the tree and of the children alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import psutil

R = TypeVar("R")

__all__ = ["PeakMemory", "RunSummary", "TileProgress", "checked_result", "format_bytes", "format_duration",
           "track"]


# --------------------------------------------------------------------------- formatting


def format_duration(seconds: float | None) -> str:
    """``75.2`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``; unknown or infinite -> ``"--:--"``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_bytes(count: float | None) -> str:
    """Binary units: ``1536`` -> ``"1.5 KiB"``; None -> ``"n/a"``."""
    if count is None:
        return "n/a"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover (loop always returns)


# --------------------------------------------------------------------------- progress


def _cli_quiet() -> bool:
    """True when the ``geoseg_batch`` logger was explicitly set above INFO (the CLI's ``--quiet``)."""
    level = logging.getLogger("geoseg_batch").level
    return level != logging.NOTSET and level > logging.INFO


class TileProgress:
    """One progress line on ``stream`` (default stderr): tiles done/total, Mpx/s, ETA.

    Use as a context manager and call :meth:`advance` as work completes (or let
    :func:`track` do it). The line is redrawn at most every ``min_interval_s`` seconds (and
    once more, final, on exit). Output is off when ``quiet`` is true, and, unless ``force``,
    when ``stream`` is not a terminal; ``quiet=None`` follows the CLI's ``--quiet`` (the
    ``geoseg_batch`` logger set to WARNING or above). Counting works either way.

    The ETA comes from the megapixel rate when ``total_megapixels`` is known, else from the
    tile rate.
    """

    def __init__(self, total_tiles: int, total_megapixels: float | None = None, *, label: str = "tiles",
                 stream: TextIO | None = None, quiet: bool | None = None, force: bool = False,
                 min_interval_s: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        if total_tiles < 0:
            raise ValueError(f"total_tiles: received {total_tiles}, expected >= 0")
        self.total_tiles = int(total_tiles)
        self.total_megapixels = total_megapixels
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval_s = min_interval_s
        self._clock = clock
        if quiet is None:
            quiet = _cli_quiet()
        self.enabled = not quiet and (force or _isatty(self.stream))
        self.tiles_done = 0
        self.megapixels_done = 0.0
        self.redraws = 0
        self._started: float | None = None
        self._last_draw: float | None = None
        self._last_width = 0
        self._lock = threading.Lock()

    # -- figures

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self._started is None else max(self._clock() - self._started, 0.0)

    @property
    def mpx_per_s(self) -> float:
        elapsed = self.elapsed_s
        return self.megapixels_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None before anything is done; 0 once all is."""
        if self.tiles_done >= self.total_tiles > 0:
            return 0.0
        elapsed = self.elapsed_s
        if self.total_megapixels and self.megapixels_done > 0:
            left = max(self.total_megapixels - self.megapixels_done, 0.0)
            return left * elapsed / self.megapixels_done
        if self.tiles_done > 0:
            return max(self.total_tiles - self.tiles_done, 0) * elapsed / self.tiles_done
        return None

    def line(self) -> str:
        """The progress line as it would be drawn now (no control characters)."""
        total = self.total_tiles
        percent = f" {100.0 * min(self.tiles_done, total) / total:3.0f}%" if total else ""
        parts = [f"{self.label} {self.tiles_done}/{total}{percent}"]
        if self.total_megapixels:
            parts.append(f"{self.megapixels_done:.1f}/{self.total_megapixels:.1f} Mpx")
        parts.append(f"{self.mpx_per_s:.2f} Mpx/s")
        parts.append(f"elapsed {format_duration(self.elapsed_s)}")
        parts.append(f"ETA {format_duration(self.eta_s)}")
        return " | ".join(parts)

    # -- updating

    def start(self) -> TileProgress:
        if self._started is None:
            self._started = self._clock()
            self._draw(force=True)
        return self

    def advance(self, tiles: int = 1, megapixels: float = 0.0) -> None:
        """Count ``tiles`` more done, covering ``megapixels``; redraws if the last draw is old enough."""
        with self._lock:
            if self._started is None:
                self._started = self._clock()
            self.tiles_done += int(tiles)
            self.megapixels_done += float(megapixels)
            self._draw(force=False)

    def close(self) -> None:
        """Draw the final line and end it with a newline (when output is on)."""
        with self._lock:
            if self.enabled and self._last_draw is not None:
                self._draw(force=True)
                self._write("\n")
                self._last_draw = None

    def __enter__(self) -> TileProgress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- output

    def _draw(self, force: bool) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and self._last_draw is not None and now - self._last_draw < self.min_interval_s:
            return
        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
        text = self.line()[:width]
        # Pad over the previous line rather than an escape code: works on any terminal.
        self._write("\r" + text + " " * max(self._last_width - len(text), 0))
        self._last_width = len(text)
        self._last_draw = now
        self.redraws += 1

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stream: progress is never worth failing a run
            self.enabled = False


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def track(futures: Sequence[Any], progress: TileProgress | None = None,
          pixels_of: Callable[[R], tuple[int, float]] | None = None) -> list[R]:
    """Results of Dask ``futures`` as they complete, returned in the order given.

    For each completed future, ``pixels_of(result)`` gives ``(tiles, megapixels)`` to add to
    ``progress`` (default: one tile, no megapixels). A failed future raises its exception, a
    cancelled one its CancelledError (the other futures are left running; cancel them if
    needed). The same future may appear more than once.
    """
    from distributed import as_completed

    positions: dict[Any, list[int]] = {}
    unique = []
    for i, future in enumerate(futures):
        if future.key not in positions:
            positions[future.key] = []
            unique.append(future)
        positions[future.key].append(i)
    results: list[Any] = [None] * len(futures)
    for future, result in as_completed(unique, with_results=True):
        checked_result(future, result)
        for i in positions[future.key]:
            results[i] = result
        if progress is not None:
            tiles, megapixels = pixels_of(result) if pixels_of is not None else (1, 0.0)
            progress.advance(tiles, megapixels)
    return results


def checked_result(future: Any, result: Any) -> Any:
    """``result`` of a completed Dask ``future`` (as :class:`distributed.as_completed` gives them); raises the
    CancelledError of a cancelled one (e.g. the scheduler was lost: its result is that error)."""
    if future.status == "cancelled":
        if isinstance(result, BaseException):
            raise result
        from distributed.client import FutureCancelledError

        raise FutureCancelledError(future.key, reason="cancelled", msg=None)
    return result


# --------------------------------------------------------------------------- run summary


@dataclass(frozen=True)
class RunSummary:
    """What a tiled run did: the ``summary`` figures of its manifest."""

    scenes: int
    tiles_total: int
    tiles_computed: int
    tiles_skipped: int
    megapixels: float
    wall_s: float
    mpx_per_s: float
    peak_worker_rss_bytes: int | None = None

    @classmethod
    def of(cls, scenes: int, tiles_total: int, tiles_computed: int, megapixels: float, wall_s: float,
           peak_worker_rss_bytes: int | None = None, tiles_skipped: int | None = None) -> RunSummary:
        """Derive ``mpx_per_s`` (and ``tiles_skipped``, default: the tiles not computed); round as manifests do.

        Rounding: megapixels and wall_s to 3 decimals, mpx_per_s to 4. Pass ``tiles_skipped``
        when some of ``tiles_total`` were neither computed nor skipped (done by an earlier,
        resumed run).
        """
        return cls(scenes=scenes, tiles_total=tiles_total, tiles_computed=tiles_computed,
                   tiles_skipped=tiles_total - tiles_computed if tiles_skipped is None else tiles_skipped,
                   megapixels=round(megapixels, 3), wall_s=round(wall_s, 3),
                   mpx_per_s=round(megapixels / wall_s, 4) if wall_s > 0 else 0.0,
                   peak_worker_rss_bytes=peak_worker_rss_bytes)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, field order kept."""
        return dataclasses.asdict(self)

    def _tiles_text(self) -> str:
        parts = [f"{self.tiles_computed} computed", f"{self.tiles_skipped} skipped"]
        earlier = self.tiles_total - self.tiles_computed - self.tiles_skipped
        if earlier > 0:
            parts.append(f"{earlier} done before")
        return f"{self.tiles_total} ({', '.join(parts)})"

    def format(self) -> str:
        """A short human-readable block, one figure per line."""
        rows = [
            ("scenes", f"{self.scenes}"),
            ("tiles", self._tiles_text()),
            ("megapixels", f"{self.megapixels:.3f}"),
            ("wall time", f"{self.wall_s:.1f} s ({format_duration(self.wall_s)})"),
            ("throughput", f"{self.mpx_per_s:.3f} Mpx/s"),
            ("peak worker RSS", format_bytes(self.peak_worker_rss_bytes)),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(["run summary"] + [f"  {name:<{width}}  {value}" for name, value in rows])


# --------------------------------------------------------------------------- peak memory


@dataclass
class PeakMemory:
    """Context manager: ``peak_tree_bytes`` and ``peak_children_bytes`` after the block."""

    interval_s: float = 0.1
    tree_interval_s: float = 1.0  # how often the list of descendants is refreshed
    peak_tree_bytes: int = 0
    peak_children_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _children: list[psutil.Process] = field(default_factory=list, repr=False)
    _listed_at: float = field(default=-math.inf, repr=False)

    def sample(self, relist: bool = True) -> None:
        """Add one reading; ``relist``: look for new descendants first, else reuse the list."""
        me = psutil.Process()
        now = time.monotonic()
        # Listing descendants scans every process on the machine (~100x a reading of one),
        # and a new worker starts small, so the list is refreshed about once a second.
        if relist or now - self._listed_at >= self.tree_interval_s:
            self._children, self._listed_at = me.children(recursive=True), now
        children = 0
        for child in self._children:
            try:
                children += child.memory_info().rss
            except psutil.Error:  # exited since it was listed
                pass
        self.peak_children_bytes = max(self.peak_children_bytes, children)
        self.peak_tree_bytes = max(self.peak_tree_bytes, me.memory_info().rss + children)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample(relist=False)

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="geoseg-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
