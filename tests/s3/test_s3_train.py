"""Training from shards on the loopback S3 server: the same model as from the local copies at one seed, in one
process and on 2 Dask workers; ranged reads (never a whole shard for a few chips); each rank reads only its own
shards; ETag checksums; one-line errors for a missing key or bucket."""

from __future__ import annotations

import collections
import json
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoseg_batch import train
from geoseg_batch.cli import main
from geoseg_batch.data.chips import open_chips, read_group
from geoseg_batch.data.shards import chunk_block
from geoseg_batch.jobfile import parse_job
from geoseg_batch.runs import run_job

from tests.helpers import TINY_TRAIN, local_client


def _upload(s3, shards: Path) -> tuple[str, str]:
    """(URL of a fresh prefix holding the shard directory's files, that prefix's key)."""
    prefix = f"train-{uuid.uuid4().hex[:8]}/shards"
    for path in sorted(shards.iterdir()):
        s3.upload(path, f"{prefix}/{path.name}")
    return f"s3://{s3.bucket}/{prefix}", prefix


def _weights(result) -> str:
    from geoseg_batch.model.bundle import load_bundle
    from geoseg_batch.training.fit import weights_digest

    return weights_digest(load_bundle(result.outputs[0]["bundle"]).model)


def test_training_from_s3_equals_training_from_local_shards(tmp_path, s3_env, shards_dir, tiny_run):
    url, _ = _upload(s3_env, shards_dir)
    local = tiny_run  # train(data=shards_dir, **TINY_TRAIN), shared with the tiny bundle
    remote = train(data=url, out=tmp_path / "remote", **TINY_TRAIN)
    f1_local, f1_remote = local.summary["test_metrics"]["f1"], remote.summary["test_metrics"]["f1"]
    assert abs(f1_remote - f1_local) <= 0.01, (f1_local, f1_remote)
    assert remote.summary["test_metrics"] == local.summary["test_metrics"]  # deterministic: the very same run
    assert _weights(remote) == _weights(local)
    assert remote.summary["chips"] == local.summary["chips"]
    checksums = json.loads((tmp_path / "remote" / "manifest.json").read_text())["checksums"]
    shard_sums = {k: v for k, v in checksums.items() if k.startswith(url)}
    assert len(shard_sums) == 4 and all(v.startswith("etag:") for v in shard_sums.values()), checksums
    assert not (tmp_path / "remote" / "stats.json").exists()  # the stats were read from the store, not computed


def test_a_glob_of_shard_urls_and_ranged_reads(s3_env, learnable_shards):
    prefix = f"glob-{uuid.uuid4().hex[:8]}"
    for name in ("shard_00000.h5", "shard_00001.h5", "shard_00002.h5"):
        s3_env.upload(learnable_shards / name, f"{prefix}/{name}")
    collection = open_chips(f"s3://{s3_env.bucket}/{prefix}/shard_0000[01].h5")
    assert len(collection.groups) == 2 and collection.chips == 64
    key = f"{prefix}/shard_00001.h5"
    size = (learnable_shards / "shard_00001.h5").stat().st_size
    header = s3_env.served(key)
    assert 0 < header < size / 8, (header, size)  # opening read the metadata, not the shard
    images, masks = read_group(collection, collection.groups[1], np.array([5, 6]))
    local = open_chips(learnable_shards)
    expected = read_group(local, local.groups[1], np.array([5, 6]))
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(masks, expected[1])
    fetched, block = s3_env.served(key) - header, chunk_block(collection.chip_shape, collection.bands)
    assert 0 < fetched <= 2 * block and fetched < size / 2, (fetched, block, size)  # a read ahead, not the file


def _job(data: str | Path, out: Path, endpoint: str) -> object:
    return parse_job({"kind": "train", "out": str(out), "data": {"path": str(data)},
                      "model": {"depth": 2, "base_filters": 4}, "storage": {"endpoint_url": endpoint},
                      "train": {"epochs": 1, "batch_size": 16, "seed": 0, "patience": 0}})


@pytest.fixture()
def reads_by_app(s3_server) -> Iterator[collections.Counter]:
    """Bytes of GET responses by (key, app id) while a test runs: the app id is the client's
    ``AWS_SDK_UA_APP_ID`` (``app/...`` in its User-Agent), which each training rank sets to its rank."""
    wsgi = s3_server.server._server  # werkzeug's server: it calls .app for every request
    served, inner = collections.Counter(), wsgi.app

    def attributing(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        chunks = list(inner(environ, start_response))
        if environ["REQUEST_METHOD"] == "GET":
            agent = environ.get("HTTP_USER_AGENT", "").split()
            app = next((part[4:] for part in agent if part.startswith("app/")), "")
            key = environ.get("PATH_INFO", "").removeprefix(f"/{s3_server.bucket}/")
            served[key, app] += sum(len(c) for c in chunks)
        return chunks

    wsgi.app = attributing
    try:
        yield served
    finally:
        wsgi.app = inner


@pytest.fixture(scope="module")
def two_workers(s3_server):
    """Two worker processes started after the server's credentials are in the environment (they inherit it)."""
    with local_client(2, processes=True) as client:
        yield client


@pytest.mark.slow
@pytest.mark.cluster
def test_two_workers_from_s3_equal_local_and_each_rank_reads_only_its_shards(tmp_path, s3_server, shards_dir,
                                                                               two_workers, reads_by_app):
    url, prefix = _upload(s3_server, shards_dir)
    local = run_job(_job(shards_dir, tmp_path / "local", s3_server.endpoint), two_workers)
    remote = run_job(_job(url, tmp_path / "remote", s3_server.endpoint), two_workers)  # the storage: block
    f1_local, f1_remote = local.summary["test_metrics"]["f1"], remote.summary["test_metrics"]["f1"]
    assert abs(f1_remote - f1_local) <= 0.01, (f1_local, f1_remote)
    ranks = remote.summary["workers"]
    assert [r["shards"] for r in ranks] == [r["shards"] for r in local.summary["workers"]]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["weights_sha256"] == local.summary["workers"][0]["weights_sha256"]  # deterministic: the same run
    for rank in ranks:
        others = [s for other in ranks if other is not rank for s in other["shards"]]
        app = f"geoseg-batch-rank-{rank['rank']}"
        own = {s: reads_by_app[f"{prefix}/{s}", app] for s in rank["shards"]}
        assert all(own.values()), own  # it trained on its shards, from the store
        foreign = {s: reads_by_app[f"{prefix}/{s}", app] for s in others}
        if rank["rank"]:
            assert not any(foreign.values()), foreign  # never a byte of another rank's shards
        else:  # the chief reads the other shards once, for the test split at the end: less than their owner
            owner = {s: reads_by_app[f"{prefix}/{s}", "geoseg-batch-rank-1"] for s in others}
            assert all(foreign[s] < owner[s] for s in others), (foreign, owner)


@pytest.mark.parametrize("where", ["key", "bucket", "credentials", "endpoint"])
def test_bad_storage_input_is_one_line_exit_2(tmp_path, s3_env, shards_dir, capsys, monkeypatch, where):
    url, _ = _upload(s3_env, shards_dir)
    expected = {"key": "no such object", "bucket": "no such bucket", "credentials": "access denied",
                "endpoint": "cannot be reached"}[where]
    if where == "key":
        url = f"s3://{s3_env.bucket}/nowhere/shard_00000.h5"
    elif where == "bucket":
        url = "s3://no-such-bucket/shards"
    elif where == "credentials":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    else:
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    out, started = tmp_path / "run", time.perf_counter()
    code = main(["train", "--data", url, "--out", str(out), "--epochs", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("geoseg-batch: error: ") and url in lines[0], lines
    assert expected in lines[0], lines
    assert time.perf_counter() - started < 30
    assert not out.exists()


def test_validate_lists_shards_in_the_store(tmp_path, s3_env, shards_dir):
    url, _ = _upload(s3_env, shards_dir)
    job = tmp_path / "train.yaml"
    job.write_text(f"kind: train\nout: {tmp_path / 'run'}\ndata:\n  path: {url}\n")
    assert main(["validate", str(job)]) == 0
    job.write_text(f"kind: train\nout: {tmp_path / 'run'}\ndata:\n  path: {url}-missing\n")
    assert main(["validate", str(job)]) == 2


def test_band_statistics_of_shards_in_the_store_equal_local(s3_env, shards_dir):
    from geoseg_batch.data.stats import compute_stats

    prefix = f"stats-{uuid.uuid4().hex[:8]}"
    for path in sorted(shards_dir.glob("shard_*.h5")):  # no stats.json: computed over ranged reads
        s3_env.upload(path, f"{prefix}/{path.name}")
    remote = compute_stats(open_chips(f"s3://{s3_env.bucket}/{prefix}"))
    assert remote == compute_stats(open_chips(shards_dir))
