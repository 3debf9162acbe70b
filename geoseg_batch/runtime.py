"""Compute process settings: thread pools and log noise, set once, before the first TF (or XLA) op.

TensorFlow sizes its intra-op pool (threads inside one kernel) and inter-op pool
(kernels run side by side) when it first runs an op, and refuses changes afterwards.
On a small machine the defaults (one thread per core for each pool, plus tf.data's own
pool, plus Dask's worker threads) oversubscribe the cores, so every entry point calls
:func:`configure_tensorflow` first with numbers chosen for its role. Inference also runs under
Keras' JAX backend (``KERAS_BACKEND=jax``, chosen per process before Keras is imported; Dask
workers inherit it), where TensorFlow need not be installed: :func:`configure_backend`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

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


def keras_backend() -> str:
    """The name of the backend Keras runs on in this process ("tensorflow", "jax", ...): ``KERAS_BACKEND``, else
    ~/.keras/keras.json, else TensorFlow; fixed when Keras is first imported."""
    import keras

    return str(keras.config.backend())


def configure_backend(intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> str:
    """Set up the backend that runs the model before its first op; returns the backend's name.

    TensorFlow: its thread pools (:func:`configure_tensorflow`). JAX: :func:`configure_xla`.
    """
    backend = keras_backend()
    if backend == "tensorflow":
        configure_tensorflow(intra_op_threads, inter_op_threads)
    elif backend == "jax":
        configure_xla(intra_op_threads)
    return backend


XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"
JAX_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geoseg-batch" / "jax"
"""JAX's persistent compilation cache, unless JAX_COMPILATION_CACHE_DIR says otherwise."""


def configure_xla(intra_op_threads: int | None = None) -> Path | None:
    """Set XLA up for this process before it compiles anything; returns its compilation cache directory.

    XLA sizes its CPU pool itself: one intra-op thread (a worker sharing the cores with other worker threads)
    turns off its multi-threaded Eigen kernels (``XLA_FLAGS``, read when XLA starts; unless the user set that
    flag); other numbers keep XLA's default. Compiled programs are kept in :data:`JAX_CACHE` (or
    ``JAX_COMPILATION_CACHE_DIR``), even quick ones: loading a bundle runs one compiled initializer per weight
    shape (~10 s on 2 busy cores, ~1 s from the cache), and each tile shape compiles the model once.
    """
    import jax

    flags = os.environ.get("XLA_FLAGS", "")
    if intra_op_threads == 1 and XLA_SINGLE_THREAD.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_SINGLE_THREAD}".strip()
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) if cache else None


def worker_address() -> str:
    """The address of the Dask worker running the current task ("local" outside a distributed worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"
