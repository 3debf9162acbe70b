"""How the model plugin carries a bundle to workers that may not see the client's disk."""

from __future__ import annotations

import hashlib

import pytest

from geoseg_batch.errors import BundleError, MissingInputError
from geoseg_batch.infer import bundle_source as sources
from geoseg_batch.infer.bundle_source import BundleSource, bundle_source


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_a_local_bundle_travels_as_bytes_only_to_workers_that_may_not_see_it(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"bundle bytes")
    digest = _digest(b"bundle bytes")
    shared = bundle_source(path, digest, None, carried=False)
    assert (shared.location, shared.payload, shared.origin) == (str(path.resolve()), None, "path")
    carried = bundle_source(path, digest, None, carried=True)
    assert (carried.payload, carried.origin) == (b"bundle bytes", "bytes")
    assert "bundle bytes" not in repr(carried)
    path.unlink()  # a worker on another machine: the path is not there, the bytes are
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with carried.local_file(scratch) as copy:
        assert copy.read_bytes() == b"bundle bytes" and copy.name == "m.keras" and copy.parent.parent == scratch
    assert not list(scratch.iterdir()), "the copy is removed once the model is loaded"


def test_a_bundle_that_changed_after_it_was_hashed_is_refused(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"new bytes")
    with pytest.raises(BundleError, match="changed after this run hashed it"):
        bundle_source(path, _digest(b"old bytes"), None, carried=True)


def test_a_large_bundle_missing_on_a_worker_names_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "big.keras"
    path.write_bytes(b"x" * 100)
    monkeypatch.setattr(sources, "CARRIED_LIMIT_BYTES", 10)
    source = bundle_source(path, _digest(b"x" * 100), None, carried=True)
    assert source.payload is None  # over the limit: the path only
    with source.local_file(tmp_path, "worker tcp://10.0.0.7:4000") as found:
        assert found == path.resolve()
    missing = BundleSource(str(tmp_path / "elsewhere.keras"), "sha256:0")
    with pytest.raises(MissingInputError) as raised:
        with missing.local_file(tmp_path, "worker tcp://10.0.0.7:4000"):
            pass
    line = str(raised.value)
    assert "\n" not in line and "worker tcp://10.0.0.7:4000" in line and "s3://" in line, line


def test_register_model_sends_bytes_only_to_a_cluster_this_process_did_not_start(tmp_path, client):
    from distributed import Client

    from geoseg_batch.infer.predictor import register_model
    from geoseg_batch.io.publish import checksums
    from tests.helpers import make_bundle

    bundle = make_bundle(tmp_path / "m.keras", depth=2)
    digest = checksums([bundle])[str(bundle)]

    def origins(dask_worker) -> list[str]:
        return [p.origin for n, p in dask_worker.plugins.items() if n.startswith("geoseg-model-")]

    ref = register_model(client, bundle, digest)  # the cluster of client.cluster: the same disk
    assert ref.bundle == str(bundle.resolve())
    assert set(sum(client.run(origins).values(), [])) == {"path"}
    with Client(client.scheduler.address, timeout=30) as existing:  # an existing scheduler's workers
        assert register_model(existing, bundle, digest) == ref
        assert set(sum(existing.run(origins).values(), [])) == {"bytes"}
    assert client.submit(lambda: ref.get().metadata.bands, pure=False).result() == 3  # loaded on the worker
