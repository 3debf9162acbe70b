"""TensorFlow process settings: thread pools and log noise, set once, before the first TF op.

TensorFlow sizes its intra-op pool (threads inside one kernel) and inter-op pool
(kernels run side by side) when it first runs an op, and refuses changes afterwards.
On a small machine the defaults (one thread per core for each pool, plus tf.data's own
pool, plus Dask's worker threads) oversubscribe the cores, so every entry point calls
:func:`configure_tensorflow` first with numbers chosen for its role.
"""

from __future__ import annotations

import logging
import os

from geoseg_batch.logs import quiet_tensorflow_env

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity and cgroup pinning)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def configure_tensorflow(intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> tuple[int, int]:
    """Set TF's thread pools (default: all available cores intra-op, 2 inter-op); returns what is in force.

    Call before anything runs a TF op. Called again with other numbers after TF started,
    it logs a warning and keeps the pools TF already has.
    """
    quiet_tensorflow_env()
    import tensorflow as tf

    intra = intra_op_threads or available_cores()
    inter = inter_op_threads or min(2, available_cores())
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    if current == (intra, inter):
        return current
    try:
        threading.set_intra_op_parallelism_threads(intra)
        threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        log.warning("TensorFlow already started with threads %s; keeping them (wanted %s)", current, (intra, inter))
        return current
    return intra, inter


def worker_address() -> str:
    """The address of the Dask worker running the current task ("local" outside a distributed worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"
