"""Watching a run: peak memory of the whole process tree (this process and its workers).

:class:`PeakMemory` samples, in a background thread, the resident memory of this process
and of every child process (an embedded LocalCluster's workers and nanny processes), and
keeps the peaks of the tree and of the children alone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil


@dataclass
class PeakMemory:
    """Context manager: ``peak_tree_bytes`` and ``peak_children_bytes`` after the block."""

    interval_s: float = 0.1
    peak_tree_bytes: int = 0
    peak_children_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def sample(self) -> None:
        me = psutil.Process()
        children = 0
        for child in me.children(recursive=True):
            try:
                children += child.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                pass
        self.peak_children_bytes = max(self.peak_children_bytes, children)
        self.peak_tree_bytes = max(self.peak_tree_bytes, me.memory_info().rss + children)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

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
