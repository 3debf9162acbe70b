"""tf.data input pipelines: stream chips from disk, shuffle, augment, normalize, batch, prefetch.

Streaming: every group (a shard, or a run of Landslide4Sense files) is cut into read
blocks of ``READ_BLOCK`` consecutive chips; an epoch visits all blocks of all groups in a
fresh random order (so shards are mixed), reads each with one HDF5 slice per run of
consecutive chips, and mixes chips further in a bounded shuffle buffer. Memory is set by
the buffer and the read block, never by the dataset's size.

Per chip, in order: normalization with the per-band statistics, D4 augmentation (one of
the 8 flips/90-degree rotations, applied identically to image and mask), photometric
jitter (per-band gain and offset in normalized space; image only), optional resize to the
model's input size (bilinear for images, nearest for masks). :func:`array_dataset` applies
the same transforms to in-memory arrays, the baseline of ``bench train``.

Repeatable at a fixed seed: every stage keeps its order (``deterministic=True``: parallel
reads and maps still run two at a time, their results taken in order), the block order and
the shuffle buffer are seeded, and the random transforms are stateless, drawn from a seed
per chip that a seeded random stream hands out in the chips' order (a new stream each
epoch, the same epochs every run). Two runs of a job at one seed see the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from geoseg_batch.data.chips import ChipCollection, read_group, split_positions
from geoseg_batch.data.stats import BandStats

READ_BLOCK = 8


@dataclass(frozen=True)
class Transform:
    """Per-chip transforms shared by every pipeline."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False
    jitter: float = 0.0
    input_size: tuple[int, int] | None = None  # (rows, cols)

    @classmethod
    def from_stats(cls, stats: BandStats, augment: bool = False, jitter: float = 0.0,
                   input_size: tuple[int, int] | None = None) -> Transform:
        return cls(stats.mean, stats.std, augment, jitter, input_size)

    @property
    def random(self) -> bool:
        """Whether the transform draws random numbers (augmentation or jitter)."""
        return bool(self.augment or self.jitter)

    def __call__(self, image: tf.Tensor, mask: tf.Tensor,
                 seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """(normalized, augmented, jittered, resized image float32, mask int32) of one chip; the random draws
        come from ``seed`` (int64 [2], stateless ops), or from TF's global generator without one."""
        mean = tf.constant(self.mean, tf.float32)
        std = tf.maximum(tf.constant(self.std, tf.float32), 1e-6)
        image = (tf.cast(image, tf.float32) - mean) / std
        mask = tf.cast(mask, tf.int32)[..., tf.newaxis]
        if seed is None and self.random:
            seed = tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
        if self.random:
            seeds = tf.random.experimental.stateless_split(seed, 4)
        if self.augment:
            image, mask = _d4(image, mask, seeds[0], seeds[1])
        if self.jitter:
            bands = len(self.mean)
            gain = tf.random.stateless_normal([bands], seeds[2], 1.0, self.jitter)
            offset = tf.random.stateless_normal([bands], seeds[3], 0.0, self.jitter)
            image = image * gain + offset
        if self.input_size is not None:
            image = tf.image.resize(image, self.input_size, method="bilinear")
            mask = tf.image.resize(mask, self.input_size, method="nearest")
        return image, mask[..., 0]


def _d4(image: tf.Tensor, mask: tf.Tensor, turn_seed: tf.Tensor,
        flip_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One of the 8 symmetries of the square (drawn from the two seeds), the same for image and mask."""
    k = tf.random.stateless_uniform([], turn_seed, 0, 4, dtype=tf.int32)
    image, mask = tf.image.rot90(image, k), tf.image.rot90(mask, k)
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    mask = tf.cond(flip, lambda: tf.image.flip_left_right(mask), lambda: mask)
    return image, mask


def _finish(dataset: tf.data.Dataset, transform: Transform, batch_size: int, shuffle: bool,
            shuffle_buffer: int, seed: int, repeat: bool = False) -> tf.data.Dataset:
    """``dataset`` of chips shuffled (seeded), repeated (``repeat``: every pass over the chips a shuffle of
    its own, each chip once per pass), transformed (a seed per chip), batched and prefetched."""
    if shuffle and shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if transform.random:  # one stateless seed per chip, in the chips' order: the same draws every run
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(lambda chip, chip_seed: transform(*chip, chip_seed),
                                                           num_parallel_calls=2, deterministic=True)
    else:
        dataset = dataset.map(transform, num_parallel_calls=2, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 2  # the model's intra-op pool owns the cores
    return dataset.with_options(options)


def read_blocks(positions: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """(group number, ascending positions) of every read block: up to ``READ_BLOCK`` chips of one group.

    ``positions`` holds, per group, the ascending positions of the chips to read.
    """
    return [(number, group_positions[start:start + READ_BLOCK])
            for number, group_positions in enumerate(positions)
            for start in range(0, len(group_positions), READ_BLOCK)]


def chip_dataset(
    collection: ChipCollection, transform: Transform, *,
    split: str = "all", val_fraction: float = 0.0, test_fraction: float = 0.0, split_seed: int = 0,
    batch_size: int = 8, shuffle: bool = False, shuffle_buffer: int = 256, seed: int = 0, repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of (normalized image float32 (b, r, c, bands), mask int32 (b, r, c)) streamed from disk.

    ``repeat``: cycle through the chips forever (every batch full), for a fixed number of steps; each pass
    is shuffled anew and holds every chip once (the shuffle buffer does not mix passes).
    """
    positions = [split_positions(g.chip_ids, split, val_fraction, test_fraction, split_seed) for g in collection.groups]
    blocks = read_blocks(positions)
    rows, cols = collection.chip_shape

    def read(block: np.int64) -> tuple[np.ndarray, np.ndarray]:
        number, block_positions = blocks[int(block)]
        return read_group(collection, collection.groups[number], block_positions)

    def read_op(block: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, masks = tf.numpy_function(read, [block], (tf.float32, tf.uint8), stateful=False)
        images.set_shape((None, rows, cols, collection.bands))
        masks.set_shape((None, rows, cols))
        return images, masks

    dataset = tf.data.Dataset.from_tensor_slices(np.arange(len(blocks), dtype=np.int64))
    if shuffle:
        dataset = dataset.shuffle(max(len(blocks), 1), seed=seed, reshuffle_each_iteration=True)
    # One Python call per block, two blocks in flight, taken in order (a fixed seed repeats the run).
    dataset = dataset.map(read_op, num_parallel_calls=2, deterministic=True).unbatch()
    return _finish(dataset, transform, batch_size, shuffle, shuffle_buffer, seed, repeat)


def array_dataset(images: np.ndarray, masks: np.ndarray, transform: Transform, *, batch_size: int = 8,
                  shuffle: bool = False, shuffle_buffer: int = 256, seed: int = 0) -> tf.data.Dataset:
    """The same batches from in-memory arrays (the in-memory baseline)."""
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    return _finish(dataset, transform, batch_size, shuffle, shuffle_buffer, seed)
