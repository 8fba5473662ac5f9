"""Batched next-item scoring of histories with a Keras BERT4Rec model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from edgerec.features import FeatureSpec


class KerasScorer:
    """Callable ``histories -> scores [B, n]`` for a BERT4Rec model.

    Builds input rows with the shared :class:`FeatureSpec` and runs the model
    through one traced ``tf.function`` with a dynamic batch dimension.
    """

    def __init__(self, model: tf.keras.Model, spec: FeatureSpec, batch_size: int = 256) -> None:
        self.model = model
        self.spec = spec
        self.batch_size = batch_size
        self._predict = tf.function(
            lambda x: tf.cast(model(x, training=False), tf.float32),
            input_signature=[tf.TensorSpec([None, spec.max_len], tf.int32)],
            reduce_retracing=True,
        )

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        """Scores for already-encoded input rows ``[B, L]``."""
        out = []
        for start in range(0, len(rows), self.batch_size):
            out.append(self._predict(tf.constant(rows[start : start + self.batch_size])).numpy())
        if not out:
            return np.zeros((0, self.spec.num_items), np.float32)
        return np.concatenate(out, axis=0)

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.score_rows(self.spec.encode_batch(histories))
