"""Publication: staging then publish, resume records, versions (3 kept), the link swap, reuse of unchanged
files, and a crash between any two steps leaving the previous output complete and nothing half-published."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from geoseg_batch.errors import OutputExistsError
from geoseg_batch.io.publication import VERSIONS_KEPT, Publication
from geoseg_batch.io.state import RunState

STEPS = ("opened", "files", "state", "manifest")


class Crash(RuntimeError):
    """A simulated failure of the run."""


def _run(out: Path, key: str, files: dict[str, str], crash_at: str | None = None, **options) -> Path:
    """Publish ``files`` with a state and a manifest, failing at step ``crash_at``; the manifest's path."""
    with Publication(out, key, **options) as publication:
        if crash_at == "opened":
            raise Crash(crash_at)
        for name, text in files.items():
            (publication.stage / name).write_text(text)
        if crash_at == "files":
            raise Crash(crash_at)
        publication.record_state(RunState.for_scenes({Path(n).stem: (n, key) for n in files}))
        if crash_at == "state":
            raise Crash(crash_at)
        manifest = publication.write_manifest(command="test", outputs=[{"files": sorted(files)}],
                                              summary={"key": key}, config={}, inputs={})
        if crash_at == "manifest":
            raise Crash(crash_at)
    return manifest


def _contents(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def _versions(out: Path) -> list[Path]:
    return sorted(p for p in (out.parent / f".{out.name}.versions").iterdir() if not p.name.startswith("."))


def test_staged_results_appear_only_at_the_end(tmp_path):
    out = tmp_path / "out"
    with Publication(out, "k1") as publication:
        assert publication.stage == tmp_path / ".out.staging-k1" and not out.exists()
        (publication.stage / "a.txt").write_text("a")
        (publication.records_dir("scene") / "0_0").parent.mkdir(parents=True)
        (publication.records_dir("scene") / "0_0").write_text("")
        manifest = publication.write_manifest(command="test", outputs=[{"a": str(out / "a.txt")}],
                                              summary={"wall_s": 1.0}, config={"x": 1}, inputs={"f": "sha256:0"})
        assert manifest == out / "manifest.json" and not out.exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "manifest.json"], "records are not published"
    payload = json.loads(manifest.read_text())
    assert list(payload) == ["command", "outputs", "summary", "config", "versions", "checksums"]
    assert payload["command"] == "test" and payload["checksums"] == {"f": "sha256:0"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging left"


def test_a_staged_failure_without_records_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Crash):
        _run(out, "k1", {"a.txt": "a"}, crash_at="manifest")
    assert list(tmp_path.iterdir()) == []


def test_resume_records_survive_a_crash_and_serve_the_rerun(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Crash), Publication(out, "k1") as publication:
        records = publication.records_dir("scene")
        records.mkdir(parents=True)
        (records / "0_0").write_text("")
        (publication.stage / "scene.zarr").write_text("half")
        raise Crash("killed")
    assert not out.exists() and (tmp_path / ".out.staging-k1" / ".done" / "scene" / "0_0").exists()
    with Publication(out, "k1") as publication:
        assert (publication.records_dir("scene") / "0_0").exists(), "the re-run finds the finished tiles"
        assert (publication.stage / "scene.zarr").read_text() == "half"
        publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "scene.zarr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_another_key_does_not_resume(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Crash), Publication(out, "k1") as publication:
        publication.records_dir("s").mkdir(parents=True)
        (publication.records_dir("s") / "0_0").write_text("")
        raise Crash("killed")
    with Publication(out, "k2") as publication:
        assert not publication.records_dir("s").exists()


def test_existing_results_need_overwrite_and_survive_a_failed_overwrite(tmp_path):
    out = tmp_path / "out"
    _run(out, "k1", {"a.txt": "first"})
    before = _contents(out)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        _run(out, "k2", {"a.txt": "second"})
    for step in STEPS:
        with pytest.raises(Crash):
            _run(out, "k2", {"a.txt": "second"}, crash_at=step, overwrite=True)
        assert _contents(out) == before, f"crash after {step}: the previous output is complete"
    _run(out, "k2", {"a.txt": "second"}, overwrite=True)
    assert (out / "a.txt").read_text() == "second"


def test_versions_swap_the_link_and_keep_three(tmp_path):
    out = tmp_path / "night"
    seen = []
    for run in range(5):
        _run(out, f"k{run}", {"a.txt": f"run {run}"}, incremental=True)
        assert out.is_symlink() and (out / "a.txt").read_text() == f"run {run}"
        seen.append(out.resolve())
    assert len(set(seen)) == 5, "each run is a new version"
    assert _versions(out) == seen[-VERSIONS_KEPT:] and VERSIONS_KEPT == 3
    assert not os.path.isabs(os.readlink(out)), "the link is relative: the tree can move"


def test_previous_version_state_and_reuse(tmp_path):
    out = tmp_path / "night"
    _run(out, "k1", {"a.txt": "a", "b.txt": "b"}, incremental=True)
    first = out.resolve()
    with Publication(out, "k2", incremental=True) as publication:
        assert publication.previous == first
        assert publication.previous_state.reusable_scenes({"a": "k1", "b": "other"}) == {"a"}
        assert publication.reuse("a.txt") and publication.reuse("a.txt"), "a second reuse finds it staged"
        assert not publication.reuse("absent.txt")
        with pytest.raises(FileNotFoundError):
            publication.reuse("absent.txt", missing_ok=False)
        (publication.stage / "b.txt").write_text("b2")
        publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})
    assert (out / "a.txt").stat().st_ino == (first / "a.txt").stat().st_ino, "unchanged: a hard link, no copy"
    assert (first / "b.txt").read_text() == "b" and (out / "b.txt").read_text() == "b2", "old version intact"


def test_no_previous_version_means_an_empty_state(tmp_path):
    with Publication(tmp_path / "night", "k1", incremental=True) as publication:
        assert publication.previous is None and publication.previous_state == RunState()
        assert not publication.has_previous("a.txt") and not publication.reuse("a.txt")


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_keeps_the_previous_version(tmp_path, step):
    out = tmp_path / "night"
    _run(out, "k1", {"a.txt": "one"}, incremental=True)
    current, before = out.resolve(), _contents(out)
    with pytest.raises(Crash):
        _run(out, "k2", {"a.txt": "two", "b.txt": "new"}, crash_at=step, incremental=True)
    assert out.resolve() == current and _contents(out) == before, "the previous version, complete"
    assert _versions(out) == [current], "nothing half-published"
    _run(out, "k2", {"a.txt": "two", "b.txt": "new"}, incremental=True)  # the re-run publishes
    assert (out / "b.txt").read_text() == "new" and len(_versions(out)) == 2


def test_a_crash_during_the_link_swap_keeps_the_previous_version(tmp_path, monkeypatch):
    out = tmp_path / "night"
    _run(out, "k1", {"a.txt": "one"}, incremental=True)
    current, before = out.resolve(), _contents(out)

    def fail(*args, **kwargs):
        raise Crash("symlink")

    monkeypatch.setattr(os, "symlink", fail)
    with pytest.raises(Crash):
        _run(out, "k2", {"a.txt": "two"}, incremental=True)
    monkeypatch.undo()
    assert out.resolve() == current and _contents(out) == before
    _run(out, "k3", {"a.txt": "three"}, incremental=True)
    assert (out / "a.txt").read_text() == "three"


def test_unversioned_results_are_not_replaced_by_an_incremental_run(tmp_path):
    out = tmp_path / "out"
    _run(out, "k1", {"a.txt": "a"})
    with pytest.raises(OutputExistsError, match="not versioned"):
        _run(out, "k2", {"a.txt": "b"}, incremental=True)
    assert (out / "a.txt").read_text() == "a"


def test_direct_publication_writes_in_place(tmp_path):
    out = tmp_path / "train"
    with Publication(out, direct=True) as publication:
        assert publication.stage == out and publication.previous is None
        manifest = publication.write_manifest(command="train", outputs=[], summary={}, config={}, inputs={})
    assert manifest == out / "manifest.json" and manifest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_an_incremental_publication_needs_a_key():
    with pytest.raises(ValueError, match="needs a key"):
        Publication("out", incremental=True)
