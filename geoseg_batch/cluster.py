"""Connecting to Dask: an embedded LocalCluster by default, or an existing scheduler.

:func:`connect` is a context manager yielding a ``distributed.Client``; the cluster it
started (if any) is closed on exit. An unreachable scheduler is a
:class:`ClusterUnreachableError` after ``timeout_s``, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from geoseg_batch.config import ClusterSpec
from geoseg_batch.errors import GeosegError
from geoseg_batch.runtime import available_cores


class ClusterUnreachableError(GeosegError, ConnectionError):
    """The scheduler address did not answer in time. Exit code 2 (the address is input)."""

    exit_code = 2


@contextlib.contextmanager
def connect(spec: ClusterSpec | None = None) -> Iterator[Any]:
    """A Client on ``spec.scheduler``, or on a LocalCluster of ``spec.workers`` processes (default: one per core)."""
    from distributed import Client, LocalCluster

    spec = spec or ClusterSpec()
    if spec.scheduler:
        try:
            client = Client(spec.scheduler, timeout=f"{spec.timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ClusterUnreachableError(
                f"scheduler {spec.scheduler} did not answer within {spec.timeout_s:g} s ({type(exc).__name__}); "
                "check the address and that `dask scheduler` is running, or drop --scheduler to use a local cluster"
            ) from None
        with client:
            yield client
        return
    cluster = LocalCluster(
        n_workers=spec.workers or available_cores(),
        threads_per_worker=spec.threads_per_worker,
        processes=True,
        memory_limit=spec.memory_limit or "auto",
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        yield client
