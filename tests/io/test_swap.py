"""Replacing an output never leaves a moment without a complete one: the renameat2 exchange, the fallback's
rename aside (and its repair after a crash), and a crash between each step of replace_tree."""

from __future__ import annotations

import os
import shutil

import pytest

from geoseg_batch.io import swap
from geoseg_batch.io.publication import Publication


class Crash(RuntimeError):
    """A simulated death between two steps."""


def _tree(path, text):
    path.mkdir()
    (path / "a.txt").write_text(text)
    (path / "manifest.json").write_text(text)
    return path


def _complete(out) -> str:
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "manifest.json"]
    return (out / "a.txt").read_text()


def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    old, new = _tree(tmp_path / "old", "old"), _tree(tmp_path / "new", "new")
    if not swap.exchange(new, old):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    assert _complete(old) == "new" and _complete(new) == "old"


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "fallback"])
def test_replace_tree_replaces_and_leaves_nothing_beside(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(swap, "exchange", lambda first, second: False)
    out = _tree(tmp_path / "out", "old")
    swap.replace_tree(_tree(tmp_path / ".stage", "new"), out)
    assert _complete(out) == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]


# Each step of replace_tree, failing in turn: the output is complete (old or new) at every moment.
STEPS = ["rename to swap", "exchange", "delete old"]
FALLBACK_STEPS = ["rename to swap", "rename aside", "rename into place", "delete old"]


def _crashing(monkeypatch, crash_at: str, exchange: bool) -> None:
    renames = iter(["rename to swap", "rename aside", "rename into place"] if not exchange else ["rename to swap"])
    real_rename, real_exchange = os.rename, swap.exchange

    def rename(src, dst):
        if next(renames, None) == crash_at:
            raise Crash(crash_at)
        real_rename(src, dst)

    def exchange_or_not(first, second):
        if not exchange:
            return False
        if crash_at == "exchange":
            raise Crash(crash_at)
        return real_exchange(first, second)

    def delete(path):
        raise Crash("delete old")

    monkeypatch.setattr(swap.os, "rename", rename)
    monkeypatch.setattr(swap, "exchange", exchange_or_not)
    if crash_at == "delete old":
        monkeypatch.setattr(swap, "_delete", delete)


@pytest.mark.parametrize("exchange, crash_at", [(True, s) for s in STEPS] + [(False, s) for s in FALLBACK_STEPS])
def test_a_crash_between_steps_leaves_a_complete_output(tmp_path, monkeypatch, exchange, crash_at):
    out = _tree(tmp_path / "out", "old")
    with monkeypatch.context() as patched:
        _crashing(patched, crash_at, exchange)
        with pytest.raises(Crash):
            swap.replace_tree(_tree(tmp_path / ".stage", "new"), out)
    if crash_at == "rename into place":  # the fallback's window: the name is absent, the old output aside
        assert not out.exists() and len(list(tmp_path.glob(".out.old-*"))) == 1
    else:
        assert _complete(out) in ("old", "new")
    before = _complete(out) if out.exists() else "old"
    swap.recover_leftovers(out)  # what the next publication into `out` does first
    assert _complete(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".stage") == ["out"], "leftovers removed"


def test_an_overwriting_publication_exchanges_and_recovers(tmp_path, monkeypatch):
    out = tmp_path / "out"
    for text in ("first", "second"):
        with Publication(out, text, overwrite=True) as publication:
            (publication.stage / "a.txt").write_text(text)
            publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})
        assert _complete(out) == text
    shutil.move(out, tmp_path / ".out.old-dead")  # a fallback publication killed in its window
    with Publication(out, "third", overwrite=True) as publication:
        assert _complete(out) == "second", "the previous output is put back before anything else"
        (publication.stage / "a.txt").write_text("third")
        publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})
    assert _complete(out) == "third" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwriting_unversioned_results_with_a_version_keeps_them_until_the_swap(tmp_path):
    out = _tree(tmp_path / "out", "plain")
    with Publication(out, "k1", incremental=True, overwrite=True) as publication:
        assert _complete(out) == "plain", "still there while the new version is built"
        (publication.stage / "a.txt").write_text("versioned")
        publication.write_manifest(command="test", outputs=[], summary={}, config={}, inputs={})
    assert out.is_symlink() and _complete(out) == "versioned"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.versions", "out"]
