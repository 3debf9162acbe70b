"""The tf.data pipeline: coverage, splits, D4 augmentation alignment, normalization, resize, streaming."""

from __future__ import annotations

from collections import Counter

import numpy as np
import tensorflow as tf

from geoseg_batch.data.chips import count_split, open_chips, split_of, split_positions
from geoseg_batch.data.pipeline import Transform, array_dataset, chip_dataset
from geoseg_batch.data.stats import load_stats


def _signature(image: np.ndarray) -> float:
    """A per-chip value that survives D4 transforms and normalization (sum over pixels of band 0)."""
    return round(float(np.asarray(image)[..., 0].sum()), 2)


def test_one_epoch_visits_every_chip_once(shards_dir):
    collection = open_chips(shards_dir)
    stats = load_stats(shards_dir / "stats.json")
    plain = [_signature(x) for x, _ in chip_dataset(collection, Transform.from_stats(stats)).unbatch()]
    dataset = chip_dataset(collection, Transform.from_stats(stats, augment=True), batch_size=5, shuffle=True,
                           shuffle_buffer=16, seed=1)
    for _ in range(2):  # each epoch: a permutation of all chips
        seen = [_signature(x) for x, _ in dataset.unbatch()]
        assert Counter(seen) == Counter(plain) and len(seen) == 96
    first, second = ([_signature(x) for x, _ in dataset.unbatch()] for _ in range(2))
    assert first != second and first != plain, "shuffling should reorder across and within shards"


def test_splits_are_disjoint_complete_and_layout_independent(shards_dir, chips_dir):
    shards, l4s = open_chips(shards_dir), open_chips(chips_dir)
    fractions = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 7}
    by_split = {s: {g.chip_ids[i] for g in shards.groups for i in split_positions(g.chip_ids, s, **fractions)}
                for s in ("train", "val", "test")}
    assert set.union(*by_split.values()) == {c for g in shards.groups for c in g.chip_ids}
    assert sum(len(v) for v in by_split.values()) == 96
    assert all(len(v) > 5 for v in by_split.values())
    for split, ids in by_split.items():
        assert count_split(l4s, split, 0.2, 0.2, 7) == len(ids)
        assert all(split_of(c, 0.2, 0.2, 7) == split for c in ids)


def test_d4_augmentation_moves_mask_with_image():
    rng = np.random.default_rng(0)
    masks = (rng.random((32, 16, 16)) > 0.7).astype(np.uint8)
    images = np.repeat(masks[..., None].astype(np.float32), 3, axis=-1)
    images[..., 1] = np.arange(16, dtype=np.float32)[None, None, :]  # an asymmetric band
    transform = Transform((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), augment=True)
    tf.random.set_seed(3)
    changed = 0
    for (x, y), original in zip(array_dataset(images, masks, transform, batch_size=1), masks):
        x, y = x.numpy()[0], y.numpy()[0]
        np.testing.assert_array_equal(x[..., 0], y)  # band 0 is the mask: still aligned
        changed += not np.array_equal(x[..., 1], images[0, ..., 1])
    assert changed > 16  # most chips were rotated or flipped (7 of 8 symmetries move the ramp)


def test_normalization_jitter_and_resize():
    images = np.full((4, 16, 16, 2), [10.0, -4.0], np.float32)
    masks = np.zeros((4, 16, 16), np.uint8)
    masks[:, :8] = 1
    plain = Transform((10.0, -2.0), (2.0, 4.0), input_size=(32, 32))
    x, y = next(iter(array_dataset(images, masks, plain, batch_size=4)))
    assert x.shape == (4, 32, 32, 2) and y.shape == (4, 32, 32) and y.dtype == tf.int32
    np.testing.assert_allclose(x.numpy()[..., 0], 0.0)
    np.testing.assert_allclose(x.numpy()[..., 1], -0.5)
    assert set(np.unique(y.numpy())) == {0, 1} and y.numpy()[:, :16].all()  # nearest keeps class ids
    jittered = Transform((10.0, -2.0), (2.0, 4.0), jitter=0.1)
    x, _ = next(iter(array_dataset(images, masks, jittered, batch_size=4)))
    per_chip = x.numpy().reshape(4, -1, 2)
    assert np.ptp(per_chip[..., 1].mean(1)) > 0  # each chip gets its own gain/offset
    np.testing.assert_allclose(per_chip.std(1), 0.0, atol=1e-5)  # ... constant over its pixels


def test_training_batches_repeat_at_a_fixed_seed(shards_dir):
    collection = open_chips(shards_dir)
    stats = load_stats(shards_dir / "stats.json")
    transform = Transform.from_stats(stats, augment=True, jitter=0.05)

    def epochs(seed: int) -> list[list[np.ndarray]]:
        dataset = chip_dataset(collection, transform, split="train", val_fraction=0.2, batch_size=8, shuffle=True,
                               shuffle_buffer=32, seed=seed)
        return [[x.numpy() for x, _ in dataset] for _ in range(2)]

    first, again, other = epochs(5), epochs(5), epochs(6)
    for epoch, repeated in zip(first, again):  # the same batches, bit for bit, epoch by epoch
        assert len(epoch) == len(repeated) and all(np.array_equal(a, b) for a, b in zip(epoch, repeated))
    assert not all(np.array_equal(a, b) for a, b in zip(first[0], first[1]))  # a new order each epoch
    assert not all(np.array_equal(a, b) for a, b in zip(first[0], other[0]))  # and another seed, another run


def test_repeated_stream_holds_every_chip_once_per_pass(shards_dir):
    collection = open_chips(shards_dir)
    stats = load_stats(shards_dir / "stats.json")
    plain = Counter(_signature(x) for x, _ in chip_dataset(collection, Transform.from_stats(stats)).unbatch())
    stream = chip_dataset(collection, Transform.from_stats(stats, augment=True), batch_size=8, shuffle=True,
                          shuffle_buffer=256, seed=2, repeat=True).unbatch()  # a buffer larger than the chips
    seen = [_signature(x) for x, _ in stream.take(3 * 96)]
    passes = [seen[i:i + 96] for i in range(0, len(seen), 96)]
    assert all(Counter(p) == plain for p in passes)  # each pass: a permutation, the buffer mixes no passes
    assert passes[0] != passes[1]
