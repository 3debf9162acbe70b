"""Connecting to Dask: an embedded LocalCluster by default, or an existing scheduler.

:func:`connect` is a context manager yielding a ``distributed.Client``; the cluster it
started (if any) is closed on exit. An unreachable scheduler is a
:class:`ClusterUnreachableError` after ``timeout_s``, never a hang.

At start, :func:`connect` logs the dashboard link and the Prometheus ``/metrics`` URL
(INFO on the ``geoseg_batch.cluster`` logger: the CLI shows it on stderr unless
``--quiet``). The embedded cluster's dashboard listens on 127.0.0.1 only (a free port),
unless the job's ``cluster.dashboard_address`` says otherwise; a dashboard reachable
beyond this machine is a WARNING (shown even with ``--quiet``), because Dask's
dashboard has no login. :func:`dashboard_url` and :func:`metrics_url` give both links
for any client.

The embedded cluster's processes log at INFO when :func:`geoseg_batch.logs.run_logging` sends
library lines to the run's log file (their stderr is that file), else at ERROR.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from distributed.diagnostics.plugin import WorkerPlugin

from geoseg_batch.config import ClusterSpec
from geoseg_batch.errors import ConfigError, GeosegError
from geoseg_batch.logs import cluster_log_level, quiet_tensorflow_env
from geoseg_batch.runtime import available_cores

log = logging.getLogger(__name__)

MODEL_WORKER_IMPORTS = ("geoseg_batch.model.inference", "geoseg_batch.infer.predictor", "geoseg_batch.infer.segment",
                        "geoseg_batch.io.cog", "rioxarray")
"""What workers that run models import (TensorFlow among it), and what their COG tasks import (rioxarray: ~0.3 s,
else paid by each worker's first COG, after the last tile); for :func:`connect`'s ``worker_imports``."""

DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:0"
"""The embedded cluster's dashboard: loopback only, on a free port (runs side by side never collide)."""


class ClusterUnreachableError(GeosegError, ConnectionError):
    """The scheduler address did not answer as a Dask scheduler in time. Exit code 2: the address is the
    user's input (a wrong host or port, a service that is not a scheduler, a scheduler not started)."""

    exit_code = 2


SCHEDULER_FORM = "tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
"""The form of a scheduler address, as error messages name it."""


def check_scheduler(address: str, timeout_s: float) -> None:
    """Return once a Dask scheduler at ``address`` answered (connection, handshake and an ``identity`` call)
    within ``timeout_s`` in all; else a one-line :class:`ClusterUnreachableError` (ClusterSpec has checked the
    address's form). ``distributed.Client`` bounds only the connection: a listener that accepts
    it and says nothing would keep it waiting forever."""
    import asyncio
    import concurrent.futures

    from distributed.comm import connect as open_comm
    from distributed.security import Security

    connection_args = Security().get_connection_args("client")  # tls:// needs the configured certificates

    async def identity() -> Any:
        comm = await open_comm(address, timeout=timeout_s, **connection_args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # its own event loop, whatever this thread runs
        try:
            reply = pool.submit(asyncio.run, asyncio.wait_for(identity(), timeout_s)).result()
        except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
            raise ClusterUnreachableError(
                f"scheduler {address} did not answer within {timeout_s:g} s ({type(exc).__name__}): nothing "
                "listens there, or it is not a Dask scheduler; check the address (expected "
                f"{SCHEDULER_FORM}; schedulers listen on 8786 by default) and that `dask scheduler` is running "
                "there, or drop --scheduler to use a local cluster") from None
        except Exception as exc:  # a comm that cannot be opened here (no TLS configured, ucx not installed...)
            raise ClusterUnreachableError(
                f"cannot talk to a scheduler at {address}: {type(exc).__name__}: {exc}; check the address "
                f"(expected {SCHEDULER_FORM}) and, for tls://, the distributed.comm.tls settings") from None
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind != "Scheduler":
        raise ClusterUnreachableError(f"{address} answers as a Dask {kind or 'service'}, not a scheduler; give "
                                      f"the scheduler's address (expected {SCHEDULER_FORM})")


class IgnoreInterrupts(WorkerPlugin):
    """A worker plugin for the workers of an embedded cluster: Ctrl-C (SIGINT, sent by a terminal to every
    process of the job) is left to the client, which closes them, instead of each printing a traceback."""

    name = "geoseg-ignore-interrupts"

    def setup(self, worker: Any) -> None:
        """Ignore SIGINT in the worker's process (its main thread runs the worker's event loop)."""
        import signal

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def connect(spec: ClusterSpec | None = None, worker_imports: tuple[str, ...] = ()) -> Iterator[Any]:
    """A Client on ``spec.scheduler``, or on a LocalCluster of ``spec.workers`` processes (default: one per core).

    ``worker_imports``: modules the embedded cluster's CPU workers will need (e.g.
    :data:`MODEL_WORKER_IMPORTS`), imported once and inherited (:func:`_workers_forked_with`).
    Logs the dashboard and metrics links once connected, and warns when the dashboard is
    reachable beyond localhost.
    """
    from distributed import Client, LocalCluster

    spec = spec or ClusterSpec()
    if spec.scheduler:
        check_scheduler(spec.scheduler, spec.timeout_s)
        try:
            client = Client(spec.scheduler, timeout=f"{spec.timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ClusterUnreachableError(
                f"scheduler {spec.scheduler} did not answer within {spec.timeout_s:g} s ({type(exc).__name__}); "
                "check the address and that `dask scheduler` is running, or drop --scheduler to use a local cluster"
            ) from None
        with client:
            _announce_external(client, spec.scheduler)
            yield client
        return
    # getattr: ClusterSpec.dashboard_address is optional in the schema (None there means: the default).
    dashboard_address = getattr(spec, "dashboard_address", None) or DEFAULT_DASHBOARD_ADDRESS
    options = {"threads_per_worker": spec.threads_per_worker, "memory_limit": spec.memory_limit or "auto",
               "dashboard_address": dashboard_address, "silence_logs": cluster_log_level()}
    quiet_tensorflow_env()  # inherited by the workers, which import TensorFlow
    gpus = gpu_workers(spec)
    if gpus:
        from dask_cuda import LocalCUDACluster

        # One worker per GPU, each pinned to its device (CUDA_VISIBLE_DEVICES) and advertising
        # GPU=1, which is what predict's model tasks ask for.
        cluster = LocalCUDACluster(n_workers=gpus, resources={"GPU": 1}, **options)
    else:
        from geoseg_batch.io.remote import local_worker_environment

        with _workers_forked_with(worker_imports) if worker_imports else contextlib.nullcontext():
            # Forked workers see the fork server's environment: today's AWS credentials are handed over.
            cluster = LocalCluster(n_workers=spec.workers or available_cores(), processes=True,
                                   env=local_worker_environment(), **options)
    with cluster, Client(cluster) as client:
        client.register_plugin(IgnoreInterrupts())  # Ctrl-C: one line from the client, no worker tracebacks
        _announce_embedded(client, cluster, dashboard_address)
        yield client


@contextlib.contextmanager
def _workers_forked_with(modules: tuple[str, ...]) -> Iterator[None]:
    """While open, new local workers are forked from a server that imported ``modules`` once.

    Spawned, each worker imports TensorFlow itself (~3 CPU-s, most of a worker's start-up)
    while the cores are needed for hashing the inputs; the fork server imports it once and
    runs no op, so its children start clean. The server is started with the first worker
    and kept for this process's later clusters, with the modules it was started with.
    A worker restarted later (after a crash) is spawned as usual. Not for GPU workers: a
    CUDA library must not be initialized before a fork.
    """
    import multiprocessing

    import dask
    from distributed.utils import get_mp_context

    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield
        return
    quiet_tensorflow_env()  # the server imports TF with this environment
    _fork_server_ends_with_this_process()
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload(["distributed", *modules])  # after Dask's own (set once)
        yield


@functools.cache
def _fork_server_ends_with_this_process() -> None:
    """Register (once per process) :func:`_end_fork_server` to run at this process's exit; returns None."""
    atexit.register(_end_fork_server)


def _end_fork_server() -> None:
    """End the worker fork server, if one runs, at once (SIGTERM; returns None). Left alone, it notices this
    process's exit and tears its TensorFlow down (~2 s) while holding this process's stdout and stderr open, so a
    caller reading them to the end (``subprocess.run(capture_output=True)``, a shell pipe) waits for it too. It
    holds no state: its children, the workers, are closed with their clusters."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # None: never started, or already stopped
    if pid is not None:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGTERM)


def start_worker_fork_server(spec: ClusterSpec, worker_imports: tuple[str, ...] = MODEL_WORKER_IMPORTS) -> bool:
    """Start the fork server the embedded cluster's CPU workers will be forked from, now, in the background; True
    when it was started (or already running).

    The server imports ``worker_imports`` (TensorFlow: ~3 CPU-s, most of a cold cluster's start) in its own
    process while this one goes on planning, sampling and hashing the scenes; :func:`connect` later forks the
    workers from it. No cluster is started, nothing waits, and a server never used exits with this process.
    Nothing is started for an existing scheduler, for GPU workers (no fork) or where forkserver is unavailable.
    """
    import multiprocessing
    import multiprocessing.forkserver

    if spec.scheduler or "forkserver" not in multiprocessing.get_all_start_methods() or gpu_workers(spec):
        return False
    with _workers_forked_with(worker_imports):  # the server's modules, as connect() sets them
        multiprocessing.forkserver.ensure_running()  # spawns the server and returns: its imports run there
    return True


def gpu_workers(spec: ClusterSpec) -> int:
    """GPU workers for the embedded cluster: ``spec.gpus``, else every visible GPU when dask-cuda is installed."""
    has_dask_cuda = importlib.util.find_spec("dask_cuda") is not None
    if spec.gpus is not None:
        if spec.gpus and not has_dask_cuda:
            raise ConfigError(f"cluster.gpus: {spec.gpus} GPU workers asked, but dask-cuda is not installed; "
                              "`pip install dask-cuda`, or set gpus: 0 to run on CPUs")
        return spec.gpus
    if not has_dask_cuda:
        return 0
    try:
        from dask_cuda.utils import get_n_gpus

        return int(get_n_gpus())
    except Exception:  # no driver, no device: a CPU machine with dask-cuda installed
        return 0


# --------------------------------------------------------------------------- links


def dashboard_url(client: Any) -> str | None:
    """The dashboard link of the client's scheduler (``http://host:port/status``), or None when it has none."""
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, TypeError, ValueError, OSError):  # no dashboard service, or no scheduler
        return None
    return str(link) if link else None


def metrics_url(client: Any) -> str | None:
    """The scheduler's Prometheus endpoint (``http://host:port/metrics``), served beside the dashboard; or None."""
    link = dashboard_url(client)
    if link is None:
        return None
    parts = urlsplit(link)
    path = parts.path
    # The link template may carry a prefix (e.g. a proxy path): keep it, swap the page.
    path = path[: -len("status")] + "metrics" if path.endswith("/status") else "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP, maybe in brackets) only ever means this machine."""
    host = host.strip().strip("[]").split("%")[0]
    if host in ("", "*"):
        return False  # an empty host means every interface
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


# --------------------------------------------------------------------------- announcements


_WHY = ("Dask's dashboard has no login: anyone who can reach that port sees task names, file paths, "
        "worker addresses and logs, and can scrape /metrics")


def _links_line(client: Any) -> str | None:
    link = dashboard_url(client)
    if link is None:
        return None
    return f"dask dashboard: {link} (Prometheus metrics: {metrics_url(client)})"


def _bound_hosts(cluster: Any) -> list[str] | None:
    """Hosts the embedded scheduler's HTTP server is bound to (None when that cannot be read)."""
    try:
        from distributed.comm import get_tcp_server_addresses

        return [str(address[0]) for address in get_tcp_server_addresses(cluster.scheduler.http_server)]
    except Exception:  # internal API; fall back to the configured address
        return None


def _exposed_hosts(bound: list[str] | None, dashboard_address: str) -> list[str]:
    """Non-loopback hosts the dashboard listens on: the bound ones, else those ``dashboard_address`` asks for."""
    if bound is None:
        host = dashboard_address.rpartition(":")[0] if ":" in dashboard_address else dashboard_address
        bound = ["0.0.0.0" if host in ("", "*") else host]  # an empty host is every interface (as Dask does)
    return sorted({host or "0.0.0.0" for host in bound if not is_loopback(host)})


def _announce_embedded(client: Any, cluster: Any, dashboard_address: str) -> None:
    line = _links_line(client)
    if line is None:
        log.info("dask dashboard: none (the scheduler serves no HTTP endpoint)")
        return
    missing = [name for name, module in (("bokeh", "bokeh"), ("prometheus-client", "prometheus_client"))
               if importlib.util.find_spec(module) is None]
    log.info("%s%s", line, f" [install {' and '.join(missing)} for the full pages]" if missing else "")
    exposed = _exposed_hosts(_bound_hosts(cluster), dashboard_address)
    if exposed:
        port = urlsplit(dashboard_url(client) or "").port
        log.warning(
            "warning: the Dask dashboard listens on %s (dashboard_address %r), beyond this machine; %s. "
            "To keep it local, set cluster.dashboard_address to %r (the default) in the job and reach it "
            "remotely through an SSH tunnel (ssh -L %s:127.0.0.1:%s HOST).",
            ", ".join(exposed), dashboard_address, _WHY, DEFAULT_DASHBOARD_ADDRESS, port or "PORT", port or "PORT",
        )


def _announce_external(client: Any, scheduler: str) -> None:
    line = _links_line(client)
    if line is None:
        log.info("dask dashboard: none (scheduler %s serves no dashboard)", scheduler)
        return
    log.info("%s", line)
    host = urlsplit(dashboard_url(client) or "").hostname or ""
    if not is_loopback(host):
        log.warning(
            "warning: scheduler %s serves its Dask dashboard on %s, beyond this machine; %s. "
            "To keep it private, start the scheduler with `dask scheduler --dashboard-address 127.0.0.1:8787` "
            "and reach it through an SSH tunnel (ssh -L 8787:127.0.0.1:8787 %s).",
            scheduler, host, _WHY, host,
        )


def cluster_gpus(client: Any) -> float:
    """GPUs the cluster's workers advertise (their resource GPU, summed)."""
    return float(sum(w.get("resources", {}).get("GPU", 0) for w in client.scheduler_info()["workers"].values()))


def worker_memory(client: Any) -> int:
    """Bytes of memory the cluster's workers use now, summed (0 when they report none)."""
    return sum(int(w.get("metrics", {}).get("memory", 0)) for w in client.scheduler_info()["workers"].values())


def model_lanes(client: Any, gpu: bool) -> int:
    """How many model tasks ``client``'s cluster runs at once: its GPUs when ``gpu``, else its worker threads."""
    if gpu:
        return max(1, int(cluster_gpus(client)))
    return max(1, sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()))
