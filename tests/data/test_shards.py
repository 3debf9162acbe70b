"""Shards: layout, chunking, chip ids, stats against numpy, info, atomic packing, repacking."""

from __future__ import annotations

import json

import h5py
import hdf5plugin  # noqa: F401  (Blosc-compressed shards)
import numpy as np
import pytest

from geoseg_batch.cli import main
from geoseg_batch.data.chips import iter_chips, open_chips
from geoseg_batch.data.l4s import scan_l4s
from geoseg_batch.data.pack import pack_shards
from geoseg_batch.data.shards import open_shards
from geoseg_batch.data.stats import BandMoments, combine, compute_stats, load_stats, moments_of
from tests.helpers import local_client


def test_pack_layout(shards_dir, chips_dir):
    shard_set = open_shards(shards_dir)
    assert [len(s.chip_ids) for s in shard_set.shards] == [24, 24, 24, 24]
    with h5py.File(shard_set.shards[0].path) as f:
        assert f["images"].shape == (24, 32, 32, 14) and f["images"].dtype == np.float32
        assert f["images"].chunks == (1, 32, 32, 14) and f.attrs["compression"] == "blosc"
        assert f["masks"].shape == (24, 32, 32) and f["masks"].dtype == np.uint8
        assert f["masks"].chunks == (1, 32, 32)
        assert json.loads(f.attrs["band_names"])[-2:] == ["slope", "DEM"]
        assert f.attrs["format_version"] == 1 and f.attrs["source"] == str(chips_dir)
    index = json.loads((shards_dir / "index.json").read_text())
    assert index["chips"] == 96 and len(index["shards"]) == 4
    assert not [p for p in shards_dir.parent.iterdir() if p.name.startswith(".")]


def test_shards_hold_exactly_the_source_chips(shards_dir, chips_dir):
    source = {p.chip_id: p for p in scan_l4s(chips_dir).pairs}
    with h5py.File(open_shards(shards_dir).shards[2].path) as f:
        ids, images, masks = list(f["chip_ids"].asstr()[()]), f["images"][()], f["masks"][()]
    for chip_id, image, mask in zip(ids, images, masks):
        with h5py.File(source[chip_id].image) as fi, h5py.File(source[chip_id].mask) as fm:
            np.testing.assert_array_equal(image, fi["img"][()])
            np.testing.assert_array_equal(mask, fm["mask"][()])


def test_stats_match_numpy(shards_dir):
    stats = load_stats(shards_dir / "stats.json")
    images = np.stack([image for image, _ in iter_chips(open_chips(shards_dir))]).astype(np.float64)
    flat = images.reshape(-1, 14)
    np.testing.assert_allclose(stats.mean, flat.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats.std, flat.std(0), rtol=1e-7)
    np.testing.assert_allclose(stats.minimum, flat.min(0))
    np.testing.assert_allclose(stats.maximum, flat.max(0))
    assert stats.pixels == flat.shape[0]


def test_moments_combine_in_any_grouping():
    rng = np.random.default_rng(1)
    parts = [rng.normal(5, 3, (n, 2)) for n in (7, 1, 30, 12)]
    total = None
    for part in parts:
        total = combine(total, moments_of(part))
    whole = np.concatenate(parts)
    assert isinstance(total, BandMoments) and total.count == len(whole)
    np.testing.assert_allclose(total.mean, whole.mean(0))
    np.testing.assert_allclose(total.m2 / total.count, whole.var(0))


def test_stats_on_distributed_client_equal_threads(shards_dir):
    with local_client(1, processes=False) as client:
        distributed = compute_stats(open_chips(shards_dir), client=client)
    assert distributed == compute_stats(open_chips(shards_dir))


def test_shards_info_and_stats_cli(shards_dir, capsys):
    assert main(["shards", "info", str(shards_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["chips"] == 96 and info["band_names"][0] == "B1" and info["compression"] == "blosc"
    assert main(["shards", "info", str(shards_dir / "shard_00001.h5")]) == 0
    assert json.loads(capsys.readouterr().out)["chips"] == 24
    assert main(["shards", "stats", str(shards_dir), "--workers", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((shards_dir / "stats.json").read_text())


def test_repack_keeps_chip_ids_and_splits(shards_dir, tmp_path):
    repacked = pack_shards(shards_dir, tmp_path / "repacked", chips_per_shard=40, compression="lzf").out
    before = [c for g in open_chips(shards_dir).groups for c in g.chip_ids]
    after = [c for g in open_chips(repacked).groups for c in g.chip_ids]
    assert sorted(before) == sorted(after) and len(open_shards(repacked).shards) == 3


def test_not_a_shard(tmp_path):
    from geoseg_batch.errors import DataError

    path = tmp_path / "shard_00000.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(DataError, match="dataset 'masks' not found"):
        open_shards(path)


def test_read_by_runs_equals_chip_by_chip(shards_dir):
    from geoseg_batch.data.shards import contiguous_runs, read_shard_chips

    assert contiguous_runs(np.array([0, 1, 2, 5, 7, 8])) == [(0, 3), (5, 6), (7, 9)]
    path = open_shards(shards_dir).shards[1].path
    positions = np.array([0, 1, 2, 5, 7, 8, 23])
    images, masks = read_shard_chips(path, positions)
    with h5py.File(path) as f:
        for k, i in enumerate(positions):
            np.testing.assert_array_equal(images[k], f["images"][i])
            np.testing.assert_array_equal(masks[k], f["masks"][i])
    with pytest.raises(ValueError, match="ascending"):
        read_shard_chips(path, np.array([3, 1]))
