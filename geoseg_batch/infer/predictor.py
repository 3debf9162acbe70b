"""The model on a worker: loaded once per worker process, called on batches of tiles.

On a distributed cluster, :class:`ModelPlugin` (a ``WorkerPlugin``) loads the bundle when it
is registered, once per worker, after setting TensorFlow's thread pools to the worker's
share of the cores (under Keras' JAX backend, ``KERAS_BACKEND=jax``: XLA's, and no TensorFlow is needed), from the bundle's path, its object-storage URL or bytes sent along
(:mod:`geoseg_batch.infer.bundle_source`: workers of an existing scheduler may not see the
client's disk); tasks reach it through a small :class:`PredictorRef` (bundle location and
content digest), so neither the model nor the bundle's bytes are pickled into a task. Without a cluster (Dask's
threaded scheduler) the ref carries an in-process :class:`Predictor` instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from geoseg_batch.infer.bundle_source import BundleSource, bundle_source
from geoseg_batch.io.urls import Location
from geoseg_batch.model.bundle import Bundle, load_bundle

if TYPE_CHECKING:
    from geoseg_batch.io.remote import CloudSettings

PLUGIN_PREFIX = "geoseg-model-"


class Predictor:
    """A loaded bundle with a forward pass compiled once for any input size, batch norms folded,
    computing in ``precision`` (float32 or bfloat16, see :mod:`geoseg_batch.model.inference`)."""

    def __init__(self, bundle: Bundle, precision: str = "float32") -> None:
        from geoseg_batch.model.inference import inference_model

        self.bundle = bundle
        self.metadata = bundle.metadata
        self._forward, self._as_input = _compiled_forward(inference_model(bundle.model, precision))
        self._staging = _Staging()

    def probabilities(self, batch: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(n, rows, cols, channels) float32 probabilities of normalized input.

        ``batch``: an (n, rows, cols, bands) array, or n (rows, cols, bands) windows of one
        shape (views are fine: each is copied once, into this thread's input buffer).
        """
        staged = self._staging.batch(batch)
        return np.asarray(self._forward(self._as_input(staged)), dtype=np.float32)


class _Staging(threading.local):
    """This thread's model input buffer: reused from batch to batch, aligned for TensorFlow (and XLA).

    TensorFlow copies a NumPy argument into a tensor of its own (a second pass over every
    input pixel, into fresh pages); a buffer aligned as its tensors are can instead be
    handed over without a copy (DLPack). Reusing it also saves the page faults of a
    fresh array per batch.
    """

    ALIGN = 64  # bytes: TensorFlow's tensor alignment (EIGEN_MAX_ALIGN_BYTES, AVX-512)

    def __init__(self) -> None:
        self.memory = np.empty(0, np.uint8)

    def batch(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        shape = (len(windows), *np.shape(windows[0]))
        size = int(np.prod(shape)) * 4
        if self.memory.size < size + self.ALIGN:
            self.memory = np.empty(size + self.ALIGN, np.uint8)
        start = -self.memory.ctypes.data % self.ALIGN
        staged = self.memory[start:start + size].view(np.float32).reshape(shape)
        for slot, window in zip(staged, windows):
            slot[...] = window
        return staged


def _compiled_forward(model: Any) -> tuple[Any, Any]:
    """model(x, training=False) compiled once per Keras backend, and how to pass it an aligned float32 array.

    TensorFlow: a tf.function traced once with free spatial dims (no retrace per tile shape), fed by DLPack
    (sharing the array's memory). JAX: :func:`_jax_forward`. Any other backend: ``predict_on_batch``.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_forward(model), (lambda array: array)
    if backend != "tensorflow":
        return (lambda x: model.predict_on_batch(x)), (lambda array: array)
    import tensorflow as tf

    bands = model.inputs[0].shape[-1]
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec((None, None, None, bands), tf.float32)])
    return forward, lambda array: tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _jax_forward(model: Any) -> Any:
    """The model's inference pass as one jax.jit function of a NumPy batch (compiled once per batch shape: a run
    has a few tile shapes), its weights passed as arguments (Keras' stateless call), not baked into the program.

    The argument is the thread's staging buffer itself (on CPU, XLA may read it in place); the call's result is
    read back before that buffer is refilled, so no computation ever sees it change.
    """
    import jax

    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    @jax.jit
    def forward(trainable: list[Any], non_trainable: list[Any], batch: Any) -> Any:
        outputs, _ = model.stateless_call(trainable, non_trainable, batch, training=False)
        return outputs

    return lambda batch: forward(trainable, non_trainable, batch)


@dataclass(frozen=True)
class PredictorRef:
    """What a task carries to find the model: the bundle's location (path or URL), digest and compute precision
    (and, locally, the model)."""

    bundle: str
    digest: str
    precision: str = "float32"
    local: Predictor | None = field(default=None, compare=False)

    @property
    def plugin_name(self) -> str:
        """The model plugin's name: a short hash of the bundle's checksum (a file's sha256 or an object's ETag and
        size), and the precision."""
        return f"{PLUGIN_PREFIX}{hashlib.sha256(self.digest.encode()).hexdigest()[:16]}-{self.precision}"

    def __getstate__(self) -> dict[str, Any]:
        return {**vars(self), "local": None}  # every field but the in-process model

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def get(self) -> Predictor:
        """The worker's predictor (loaded by its plugin), or the in-process one."""
        if self.local is not None:
            return self.local
        from distributed import get_worker

        plugin = get_worker().plugins.get(self.plugin_name)
        if plugin is None:  # registered plugins also run on workers that join later, so this is a bug
            raise RuntimeError(f"model plugin {self.plugin_name} missing on this worker")
        return plugin.predictor


class ModelPlugin(WorkerPlugin):
    """Set the backend's threads to this worker's share of the cores, then load the bundle, once per worker (from
    its path, its URL or the bytes carried: :mod:`geoseg_batch.infer.bundle_source`). The Keras backend is the
    worker's (``KERAS_BACKEND`` in its environment, inherited from the process that started it)."""

    def __init__(self, ref: PredictorRef, intra_op_threads: int | None, source: BundleSource | None = None) -> None:
        self.ref = ref
        self.name = ref.plugin_name
        self.intra_op_threads = intra_op_threads
        self.source = source or BundleSource(ref.bundle, ref.digest)
        self.predictor: Predictor | None = None
        self.origin = ""

    def setup(self, worker: Any) -> None:
        from geoseg_batch.runtime import configure_backend

        configure_backend(self.intra_op_threads, 1)
        with self.source.local_file(Path(worker.local_directory), f"worker {worker.address}") as path:
            bundle = load_bundle(path)
        self.predictor = Predictor(bundle, self.ref.precision)
        self.origin = self.source.origin  # what the bundle was read from (the bytes are dropped: the model holds it)
        self.source = dataclasses.replace(self.source, payload=None)

    def teardown(self, worker: Any) -> None:
        self.predictor = None


def register_model(client: Any, bundle: Location, digest: str, precision: str = "float32",
                   cloud: CloudSettings | None = None) -> PredictorRef:
    """Load the bundle (a path, or a URL read with ``cloud``) on every worker of ``client`` (once, computing in
    ``precision``) and return the ref tasks use.

    Workers on this machine split its cores between their threads (TF intra-op = cores / all worker threads here);
    workers elsewhere keep TF's defaults for their machine. The workers of a cluster this process did not start
    (``client.cluster`` is None: an existing scheduler) get a local bundle's bytes with the plugin.
    """
    from geoseg_batch.runtime import available_cores

    source = bundle_source(bundle, digest, cloud, carried=getattr(client, "cluster", None) is None)
    ref = PredictorRef(source.location, digest, precision)
    workers = list(client.scheduler_info()["workers"].values())
    local = [w for w in workers if str(w.get("host", "")) in ("127.0.0.1", "localhost")]
    threads = sum(w.get("nthreads", 1) for w in local)
    intra = max(1, available_cores() // threads) if local and len(local) == len(workers) else None
    client.register_plugin(ModelPlugin(ref, intra, source), name=ref.plugin_name)
    return ref
