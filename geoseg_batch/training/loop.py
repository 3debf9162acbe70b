"""The compiled train and eval steps of the training loop, alone or as one replica of a strategy.

The loop is written out (GradientTape + ``optimizer.apply_gradients`` around Keras 3
layers and losses) rather than ``model.fit``, because distributed training runs the same
loop under ``tf.distribute`` and Keras 3's ``fit`` does not work under
MultiWorkerMirroredStrategy.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TrainLoop:
    """The compiled train/eval steps of one model (TF backend), alone or as one replica of a strategy.

    Under a ``tf.distribute`` strategy each replica's loss is divided by the number of
    replicas: the Keras optimizer sums gradients over replicas (an all-reduce), so the
    update is that of the mean loss over the global batch, as in one process.
    """

    def __init__(self, model: Any, optimizer: Any, loss_name: str, classes: int, threshold: float,
                 strategy: Any | None = None) -> None:
        import tensorflow as tf

        from geoseg_batch.model.losses import get_loss
        from geoseg_batch.model.metrics import confusion_matrix

        loss_fn = get_loss(loss_name)
        bands = model.inputs[0].shape[-1]
        signature = [tf.TensorSpec((None, None, None, bands), tf.float32), tf.TensorSpec((None, None, None), tf.int32)]
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                probabilities = model(x, training=True)
                loss = loss_fn(y, probabilities)
                scaled = loss / replicas if replicas > 1 else loss
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss, confusion_matrix(y, probabilities, classes, threshold)

        if strategy is None:
            train_step = tf.function(replica_step, input_signature=signature)
        else:
            @tf.function(input_signature=signature)
            def train_step(x, y):
                loss, matrix = strategy.run(replica_step, args=(x, y))
                matrix = tf.cast(matrix, tf.float32)  # counts per step are far below float32's exact range
                return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                        tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, matrix, axis=None), tf.int64))

        @tf.function(input_signature=signature)
        def eval_step(x, y):
            probabilities = model(x, training=False)
            return loss_fn(y, probabilities), confusion_matrix(y, probabilities, classes, threshold)

        self.train_step, self.eval_step, self.strategy, self.classes = train_step, eval_step, strategy, classes
        if strategy is not None:
            @tf.function(input_signature=[tf.TensorSpec((None,), tf.float64)])
            def sum_over_replicas(vector):  # compiled once: eager collectives leak threads
                return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(vector,)), axis=None)

            self.sum_over_replicas = sum_over_replicas

    def run_everywhere(self, step: Any, dataset: Any | None, classes: int) -> tuple[float, np.ndarray, int]:
        """Like :meth:`run` over each replica's own ``dataset``, summed over all replicas (one all-reduce)."""
        import tensorflow as tf

        loss, matrix, chips = self.run(step, dataset, classes) if dataset is not None else (0.0, 0, 0)
        local = np.concatenate([[loss * chips if chips else 0.0, chips], np.ravel(matrix) + np.zeros(classes**2)])
        total = self.sum_over_replicas(tf.constant(local, tf.float64)).numpy()
        chips = int(total[1])
        return (total[0] / chips if chips else float("nan")), total[2:].reshape(classes, classes).astype(np.int64), chips

    @staticmethod
    def run(step: Any, dataset: Any, classes: int) -> tuple[float, np.ndarray, int]:
        """(mean loss weighted by batch size, confusion matrix, chips) of one pass."""
        total, chips, matrix = 0.0, 0, np.zeros((classes, classes), np.int64)
        for x, y in dataset:
            loss, counts = step(x, y)
            n = int(x.shape[0])
            total += float(loss) * n
            chips += n
            matrix += counts.numpy()
        return (total / chips if chips else float("nan")), matrix, chips

    def validation(self, dataset: Any | None) -> tuple[float, np.ndarray]:
        """(mean loss, confusion matrix) of ``dataset`` through the eval step; under a strategy over every
        replica's own dataset (None where a replica has no validation chips)."""
        if self.strategy is None:
            loss, matrix, _ = self.run(self.eval_step, dataset, self.classes)
        else:
            loss, matrix, _ = self.run_everywhere(self.eval_step, dataset, self.classes)
        return loss, matrix
