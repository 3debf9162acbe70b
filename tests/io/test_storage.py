"""LocalStorage: atomic writes, listing, removal, links, moving a local file into place (put)."""

from __future__ import annotations

import pytest

from geoseg_batch.io.storage import LocalStorage, Storage


def test_local_storage_is_a_storage():
    assert isinstance(LocalStorage(), Storage)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    storage = LocalStorage()
    target = tmp_path / "sub" / "state.json"
    assert storage.write_text(target, "one\n") == target
    storage.write_text(target, "two\n")
    assert storage.read_text(target) == "two\n" and storage.read_bytes(target) == b"two\n"
    assert [p.name for p in storage.list(target.parent)] == ["state.json"], "no temporary left beside it"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    storage = LocalStorage()
    target = storage.write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(TypeError):
        storage.write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert storage.list(tmp_path) == [target]


def test_exists_list_remove(tmp_path):
    storage = LocalStorage()
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f.txt").write_text("x")
    (tmp_path / "b.txt").write_text("y")
    assert storage.list(tmp_path) == [tmp_path / "b.txt", tmp_path / "d"]
    assert storage.list(tmp_path / "absent") == [] and storage.list(tmp_path / "b.txt") == []
    assert storage.exists(tmp_path / "d" / "e" / "f.txt") and not storage.exists(tmp_path / "nope")
    storage.remove(tmp_path / "d")
    storage.remove(tmp_path / "b.txt")
    storage.remove(tmp_path / "never-there")
    assert storage.list(tmp_path) == []


def test_remove_a_link_keeps_its_target(tmp_path):
    storage = LocalStorage()
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "kept").write_text("x")
    (tmp_path / "link").symlink_to("target")
    storage.remove(tmp_path / "link")
    assert (tmp_path / "target" / "kept").exists() and not (tmp_path / "link").exists()


def test_link_shares_data_for_files_and_trees(tmp_path):
    storage = LocalStorage()
    (tmp_path / "src" / "inner").mkdir(parents=True)
    (tmp_path / "src" / "inner" / "chunk").write_bytes(b"123")
    (tmp_path / "one.tif").write_bytes(b"tif")
    storage.link(tmp_path / "src", tmp_path / "dst")
    storage.link(tmp_path / "one.tif", tmp_path / "two.tif")
    assert (tmp_path / "dst" / "inner" / "chunk").read_bytes() == b"123"
    assert (tmp_path / "dst" / "inner" / "chunk").stat().st_ino == (tmp_path / "src" / "inner" / "chunk").stat().st_ino
    assert (tmp_path / "two.tif").stat().st_ino == (tmp_path / "one.tif").stat().st_ino


def test_put_replaces(tmp_path):
    storage = LocalStorage()
    storage.write_text(tmp_path / "new", "new")
    storage.write_text(tmp_path / "old", "old")
    storage.put(tmp_path / "new", tmp_path / "old")
    assert storage.read_text(tmp_path / "old") == "new" and not storage.exists(tmp_path / "new")
    with storage.local_copy(tmp_path / "here") as local:
        assert local == tmp_path / "here"
