"""Data-parallel training over shards on Dask workers, synchronised by TensorFlow's all-reduce.

Dask places one *rank* (a training process) on each chosen worker; the ranks form a
``tf.distribute.MultiWorkerMirroredStrategy`` cluster (``TF_CONFIG`` built from the
workers' hosts and free ports) and run the same custom loop as single-process training
(:func:`geoseg_batch.training.fit.fit`): every step, each rank computes gradients on its
share of the global batch and TensorFlow's collective all-reduce sums them, so all ranks
apply the same update and keep identical weights.

Shards: each rank reads a disjoint subset of the shard files (or objects, in object
storage), balanced by training-chip count; together the subsets cover every shard each
epoch. The chips as the client opened them (shard names, chip ids, the store's settings)
travel with the rank's task, so a rank opens no shard but its own for training and
validation; only the chief, at the end, reads the test chips of every shard. Every rank runs the same number
of steps per epoch (collectives need equal step counts): ranks with fewer chips cycle
through theirs. Rank 0, the *chief*, writes checkpoints, history and the bundle to
``out``; the others write to scratch (``out/.ranks/<rank>``). Every rank resumes from
the chief's last checkpoint, so re-running a failed job continues after the last
completed epoch.

Design constraints (TF 2.21 / Keras 3): the strategy must exist before any other TF op
in its process, and a rank whose peer never arrives blocks forever and ignores SIGTERM.
So each rank is a fresh subprocess (never the Dask worker process itself), started by a
Dask task pinned to its worker, which kills it when the job aborts, when it stalls, or
when the worker dies (the child dies with its parent); and the client aborts the whole run, with one line naming the rank, as soon as a rank fails or
its worker leaves the cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg_batch.config import TrainJob
from geoseg_batch.data.chips import ChipCollection, absolute, split_positions
from geoseg_batch.data.stats import BandStats
from geoseg_batch.errors import ConfigError, RunError
from geoseg_batch.io.urls import name
from geoseg_batch.training.role import Distribution

log = logging.getLogger(__name__)

STALL_TIMEOUT_S = 600.0  # a rank whose log has not moved for this long is killed
RANKS_DIR = ".ranks"
COLLECTION_NAME = "collection.pickle"  # the chips as the client opened them (shards' ids; a store's settings)


@dataclass(frozen=True)
class RankResult:
    """What one rank reported back."""

    rank: int
    worker: str
    returncode: int | None
    reason: str  # "" when it finished
    log_tail: str
    result: dict[str, Any]  # the rank's FitResult, as JSON (empty when it did not finish)

    @property
    def weights_sha256(self) -> str | None:
        """The digest of the rank's final weights, None when it did not finish."""
        return self.result.get("weights_sha256")


def train_chip_counts(collection: ChipCollection, val_fraction: float, test_fraction: float, seed: int) -> list[int]:
    """Training chips in each group (shard) of the collection."""
    return [len(split_positions(g.chip_ids, "train", val_fraction, test_fraction, seed)) for g in collection.groups]


def balanced_assignment(counts: list[int], workers: int) -> list[list[int]]:
    """Group indices for each of ``workers`` ranks: disjoint, covering all, balanced by chip count.

    Largest groups first, each to the least-loaded rank (ties: lowest rank), so the
    assignment is deterministic.
    """
    if workers < 1:
        raise ConfigError(f"training workers: received {workers}, expected at least 1")
    if len(counts) < workers:
        raise ConfigError(f"{workers} training workers but only {len(counts)} shards; every worker needs at least "
                          "one: pack with a smaller --chips-per-shard or use fewer workers")
    loads, assigned = [0] * workers, [[] for _ in range(workers)]
    for group in sorted(range(len(counts)), key=lambda g: (-counts[g], g)):
        rank = min(range(workers), key=lambda r: (loads[r], r))
        assigned[rank].append(group)
        loads[rank] += counts[group]
    return [sorted(groups) for groups in assigned]


def subset(collection: ChipCollection, groups: list[int]) -> ChipCollection:
    """The collection restricted to ``groups`` (a rank's shards)."""
    return dataclasses.replace(collection, groups=tuple(collection.groups[g] for g in groups))


def steps_per_epoch(rank_counts: list[int], local_batch: int) -> int:
    """Steps every rank runs per epoch: enough for the rank with the most chips to see them all."""
    return max(1, max(math.ceil(n / local_batch) for n in rank_counts))


# --------------------------------------------------------------------------- on the client


def training_workers(client: Any, count: int | None) -> list[str]:
    """Addresses of the ``count`` workers (default: all; GPU workers when there are any), rank order."""
    info = client.run_on_scheduler(_worker_info)
    available = sorted(a for a, w in info.items() if w.get("resources", {}).get("GPU")) or sorted(info)
    count = count or len(available)
    if count > len(available):
        raise ConfigError(f"{count} training workers asked, but the cluster has {len(available)}; "
                          "lower cluster.train_workers (--train-workers) or add workers")
    return available[:count]


def train_on_cluster(job: TrainJob, collection: ChipCollection, stats: BandStats, data_checksum: str, client: Any,
                     workers: int | None = None) -> tuple[list[RankResult], list[dict[str, Any]]]:
    """Train ``job`` with one rank per chosen worker of ``client``; (rank results, shard assignment)."""
    from distributed import Event

    # Workers may run elsewhere, in another directory: they get absolute paths (URLs stay as they are).
    collection = absolute(collection)
    job = job.model_copy(update={"out": Path(job.out).resolve(),
                                 "data": job.data.model_copy(update={"path": str(collection.path)})})
    addresses = training_workers(client, workers)
    world = len(addresses)
    if job.train.batch_size % world:
        raise ConfigError(f"train.batch_size {job.train.batch_size} is the global batch and must split evenly over "
                          f"{world} workers; use a multiple of {world}")
    data = job.data
    counts = train_chip_counts(collection, data.val_fraction, data.test_fraction, data.split_seed)
    assignment = balanced_assignment(counts, world)
    local_batch = job.train.batch_size // world
    steps = steps_per_epoch([sum(counts[g] for g in groups) for groups in assignment], local_batch)
    info = client.run_on_scheduler(_worker_info)
    ports = client.run(_free_port, workers=addresses)
    hosts = [f"{info[a]['host']}:{ports[a]}" for a in addresses]
    shards = [[_group_name(collection, g) for g in groups] for groups in assignment]
    record = [{"rank": r, "worker": a, "tf_address": h, "shards": s,
               "train_chips": sum(counts[g] for g in groups)}
              for r, (a, h, s, groups) in enumerate(zip(addresses, hosts, shards, assignment))]
    for entry in record:
        log.info("train rank %d on %s: %d shards, %d training chips (%s)", entry["rank"], entry["worker"],
                 len(entry["shards"]), entry["train_chips"], ", ".join(entry["shards"]))
    run_id = hashlib.sha256(json.dumps([hosts, str(job.out), time.time_ns()]).encode()).hexdigest()[:12]
    abort = Event(f"geoseg-train-abort-{run_id}", client=client)
    threads = _threads_per_rank(info, addresses)
    gpu = {"GPU": 1} if info[addresses[0]].get("resources", {}).get("GPU") else None
    futures = []
    for rank, address in enumerate(addresses):
        payload = {"job": job.model_dump(mode="json"), "rank": rank, "world": world, "groups": assignment[rank],
                   "tf_config": {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": rank}},
                   "stats": stats.to_dict(), "data_checksum": data_checksum, "steps_per_epoch": steps,
                   "abort_event": abort.name, "threads": threads, "run_id": run_id, "collection": collection}
        futures.append(client.submit(run_rank, payload, workers=[address], allow_other_workers=False, pure=False,
                                     retries=0, key=f"train-rank-{rank}-{run_id}", resources=gpu))
    try:
        results = _supervise(client, futures, addresses, abort)
    finally:
        abort.set()  # stragglers stop
    return results, record


def _supervise(client: Any, futures: list[Any], addresses: list[str], abort: Any) -> list[RankResult]:
    """Wait for the ranks; on the first failure or lost worker, abort them all and raise one line."""
    from distributed import wait

    while True:
        try:
            wait(futures, timeout=1.0, return_when="FIRST_COMPLETED")
        except TimeoutError:  # the poll interval: check the workers, then wait again
            pass
        alive = set(client.run_on_scheduler(_worker_addresses))  # live, not the client's cached view
        for rank, (future, address) in enumerate(zip(futures, addresses)):
            if address not in alive:  # its task will never finish: wait for the others only
                _abort_all(abort, futures, [f for f, a in zip(futures, addresses) if a in alive])
                raise RunError(f"training worker {address} (rank {rank}) left the cluster mid-training; the run "
                               "stopped; re-run the same command to resume after the last completed epoch")
            if future.done():
                failure = _failure_of(future, rank, address)
                if failure:
                    _abort_all(abort, futures, futures)
                    raise RunError(failure)
        if all(f.done() for f in futures):
            return [f.result() for f in futures]


def _worker_addresses(dask_scheduler: Any) -> list[str]:
    """Runs on the scheduler: the workers it knows now."""
    return list(dask_scheduler.workers)


def _worker_info(dask_scheduler: Any) -> dict[str, dict[str, Any]]:
    """Runs on the scheduler: host, threads and resources of each worker it knows now."""
    return {address: {"host": state.host, "nthreads": state.nthreads, "resources": dict(state.resources)}
            for address, state in dask_scheduler.workers.items()}


def _failure_of(future: Any, rank: int, address: str) -> str:
    """One line when a finished rank failed, else ''."""
    if future.status == "error":
        return f"training rank {rank} on {address} failed: {future.exception()}"
    result: RankResult = future.result()
    if result.returncode == 0:
        return ""
    detail = result.reason or (result.log_tail.strip().splitlines() or ["no output"])[-1]
    return (f"training rank {rank} on {address} stopped ({detail}); re-run the same command to resume after the "
            "last completed epoch")


def _abort_all(abort: Any, futures: list[Any], reporting: list[Any], grace_s: float = 30.0) -> None:
    """Tell every rank to kill its training process, give the ``reporting`` ones ``grace_s`` to say so, cancel all."""
    from distributed import wait

    abort.set()
    try:
        wait(reporting, timeout=grace_s)
    except TimeoutError:
        pass
    for future in futures:
        future.cancel()


def _free_port() -> int:
    """A free TCP port on this worker's host (for TensorFlow's collective server)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def _threads_per_rank(info: dict[str, Any], addresses: list[str]) -> int:
    """TF intra-op threads of each rank: this machine's cores shared by the ranks on it (else the worker's threads)."""
    from geoseg_batch.runtime import available_cores

    host = info[addresses[0]]["host"]
    local = host in ("127.0.0.1", "localhost") or host == socket.gethostbyname(socket.gethostname())
    if not local:
        return max(1, int(info[addresses[0]].get("nthreads", 1)))
    return max(1, available_cores() // sum(1 for a in addresses if info[a]["host"] == host))


def _group_name(collection: ChipCollection, group: int) -> str:
    """The file name of group ``group``'s shard (``group-NNNNN`` for Landslide4Sense files)."""
    shard = collection.groups[group].shard
    return name(shard) if shard is not None else f"group-{group:05d}"


# --------------------------------------------------------------------------- on a worker


def run_rank(payload: dict[str, Any]) -> RankResult:
    """A Dask task: run one rank in a fresh process and watch it (abort event, stalls)."""
    from distributed import Event, get_worker

    worker = get_worker()
    scratch = rank_dir(Path(payload["job"]["out"]), payload["rank"])
    scratch.mkdir(parents=True, exist_ok=True)
    payload_path, log_path, result_path = (scratch / "payload.json", scratch / "rank.log", scratch / "result.json")
    payload = dict(payload)
    (scratch / COLLECTION_NAME).write_bytes(pickle.dumps(payload.pop("collection")))
    payload_path.write_text(json.dumps(payload))
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "TF_CONFIG": json.dumps(payload["tf_config"]), "TF_CPP_MIN_LOG_LEVEL": "2",
           "AWS_SDK_UA_APP_ID": f"geoseg-batch-rank-{payload['rank']}"}  # a store's logs tell the ranks apart
    abort = Event(payload["abort_event"])
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "geoseg_batch.training.distributed", str(payload_path)],
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   preexec_fn=_die_with_parent)
        reason = _watch(process, abort, log_path)
    tail = log_path.read_text()[-4000:] if log_path.exists() else ""
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    return RankResult(payload["rank"], worker.address, process.returncode, reason, tail, result)


def rank_dir(out: Path, rank: int) -> Path:
    """Scratch directory of a rank: payload, log, result, and a non-chief rank's checkpoints."""
    return Path(out) / RANKS_DIR / str(rank)


def _watch(process: subprocess.Popen, abort: Any, log_path: Path) -> str:
    """Wait for the rank's process; kill it on abort or stall. The reason it was killed, or ''."""
    while process.poll() is None:
        reason = ""
        if abort.is_set():
            reason = "aborted: another rank failed"
        elif time.time() - log_path.stat().st_mtime > STALL_TIMEOUT_S:
            reason = f"no progress for {STALL_TIMEOUT_S:g} s"
        if reason:
            _kill(process)
            return reason
        time.sleep(0.5)
    return ""


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL the rank's process group: a rank blocked in a collective ignores SIGTERM."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the Dask worker that started it dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _rank_main(payload_path: Path) -> None:
    """The rank's process: strategy first (before any other TF op), then the shared training loop."""
    payload = json.loads(payload_path.read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(payload["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(2)
    # No collective timeout: TF starts a timer thread per collective op when one is set (thousands
    # per epoch, until thread creation fails). Hangs are bounded outside: a rank whose peer dies
    # is killed by its watcher once the client sees the failure.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    from geoseg_batch.jobfile import parse_job
    from geoseg_batch.training.fit import fit

    logging.basicConfig(level=logging.INFO, format=f"rank {payload['rank']}: %(message)s")
    job = parse_job(payload["job"], source="distributed training")
    scratch = rank_dir(Path(job.out), payload["rank"])
    full = pickle.loads((scratch / COLLECTION_NAME).read_bytes())  # as the client opened it: no shard re-read
    distribution = Distribution(strategy, payload["rank"], payload["world"], payload["steps_per_epoch"], full, scratch)
    result = fit(job, subset(full, payload["groups"]), BandStats.from_dict(payload["stats"]), payload["data_checksum"],
                 distribution=distribution)
    (scratch / "result.json").write_text(json.dumps(dataclasses.asdict(result), default=str))


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
