"""Distillation losses at the masked positions: full-catalog and sampled.

Both return one loss per masked position for student hidden vectors ``[R, d]``, the
teacher's logits ``[R, n]`` over items ``1..n`` (``None`` when ``alpha = 0``) and the
ground-truth item ids ``[R]`` (``1..n``)::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + (1 - alpha) * CE(ground-truth item, student)

:func:`full_kd_loss` computes both terms over the whole catalog. With 100k items that
is a ``[R, 100k]`` softmax, its gradient and a dense Adam update of the item table per
step, which is what made distillation at that scale take hours on a 2-core host.

:func:`sampled_kd_loss` evaluates the same two terms over a per-row candidate set: the
target, the teacher's top ``M`` items (where the soft targets have their mass) and ``K``
negatives shared by the batch, drawn without replacement from the training counts raised
to ``negative_distortion``. The normaliser of each softmax is the Horvitz-Thompson
estimate over that set: the target and top-``M`` items are always in it (weight 1),
a sampled item ``j`` is in it with probability ``pi_j`` (weight ``1 / pi_j``, i.e. its
logit minus ``log pi_j``); a sampled item that is already a fixed candidate of the row
is dropped, so nothing is counted twice. Teacher and student get the same correction,
so the KL compares the two estimated distributions on the same support. Gradients touch
only the gathered rows of the item table. The exported model is unchanged: it still
scores the full catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from edgerec.teacher.model import BERT4Rec

KDLoss = Callable[[tf.Tensor, "tf.Tensor | None", tf.Tensor], tf.Tensor]
_MASKED = -1e9


def _kl(teacher_logits: tf.Tensor, student_logits: tf.Tensor) -> tf.Tensor:
    t_log_p = tf.nn.log_softmax(teacher_logits, axis=-1)
    s_log_p = tf.nn.log_softmax(student_logits, axis=-1)
    return tf.reduce_sum(tf.exp(t_log_p) * (t_log_p - s_log_p), axis=-1)


def full_kd_loss(student: BERT4Rec, alpha: float, temperature: float) -> KDLoss:
    """KL and cross-entropy over the full catalog."""

    def loss(hidden: tf.Tensor, teacher_logits: tf.Tensor | None, items: tf.Tensor) -> tf.Tensor:
        logits = tf.cast(student.score_hidden(hidden), tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(items - 1, logits)
        if teacher_logits is None or alpha == 0.0:
            return ce
        kl = _kl(teacher_logits / temperature, logits / temperature)
        return alpha * temperature**2 * kl + (1.0 - alpha) * ce

    return loss


def sampled_kd_loss(
    student: BERT4Rec,
    alpha: float,
    temperature: float,
    *,
    draw_negatives: Callable[[tf.Tensor], Any],
    num_sampled: int,
    teacher_top_k: int,
) -> KDLoss:
    """KL and cross-entropy over target + teacher top-k + shared sampled negatives.

    ``draw_negatives`` is :func:`edgerec.teacher.train.negative_sampler`'s draw of
    ``num_sampled`` distinct item-table rows.
    """
    table_rows = student.num_items + 2
    n = student.num_items

    def loss(hidden: tf.Tensor, teacher_logits: tf.Tensor | None, items: tf.Tensor) -> tf.Tensor:
        items = tf.cast(items, tf.int64)
        rows = tf.shape(items, out_type=tf.int64)[0]
        sampled, _, expected = draw_negatives(items[:, None])
        log_pi = tf.math.log(tf.clip_by_value(tf.cast(expected, tf.float32), 1e-30, 1.0))
        use_teacher = teacher_logits is not None and alpha > 0.0
        if use_teacher:
            top = tf.cast(tf.math.top_k(teacher_logits, k=min(teacher_top_k, n)).indices, tf.int64)
            fixed = tf.concat([items[:, None], top + 1], axis=1)  # [R, 1 + M] table rows
            dup_fixed = tf.concat(
                [tf.zeros([rows, 1], tf.bool), tf.equal(top + 1, items[:, None])], axis=1
            )
        else:
            fixed = items[:, None]
            dup_fixed = tf.zeros([rows, 1], tf.bool)
        # sampled items that are already fixed candidates of a row: drop them in that row
        slot = tf.scatter_nd(
            sampled[:, None], tf.range(1, num_sampled + 1, dtype=tf.int64), [table_rows]
        )
        hit = tf.gather(slot, fixed) - 1  # [R, 1 + M]: index into `sampled`, or -1
        where = tf.where(hit >= 0)
        dup_sampled = (
            tf.scatter_nd(
                tf.stack([where[:, 0], tf.gather_nd(hit, where)], axis=1),
                tf.ones([tf.shape(where)[0]], tf.int32),
                tf.stack([rows, tf.cast(num_sampled, tf.int64)]),
            )
            > 0
        )

        h = tf.cast(student.head_norm(student.head_dense(hidden)), tf.float32)
        table = tf.cast(student.item_embedding.embeddings, tf.float32)
        bias = tf.cast(student.output_bias, tf.float32)
        s_fixed = tf.einsum("rd,rcd->rc", h, tf.gather(table, fixed)) + tf.gather(bias, fixed)
        s_sampled = tf.matmul(h, tf.gather(table, sampled), transpose_b=True) + tf.gather(
            bias, sampled
        )

        def candidates(fixed_logits: tf.Tensor, sampled_logits: tf.Tensor, t: float) -> tf.Tensor:
            a = tf.where(dup_fixed, _MASKED, fixed_logits / t)
            b = tf.where(dup_sampled, _MASKED, sampled_logits / t - log_pi[None, :])
            return tf.concat([a, b], axis=1)

        ce = -tf.nn.log_softmax(candidates(s_fixed, s_sampled, 1.0), axis=-1)[:, 0]
        if not use_teacher:
            return ce
        t_fixed = tf.gather(teacher_logits, fixed - 1, batch_dims=1)
        t_sampled = tf.gather(teacher_logits, sampled - 1, axis=1)
        kl = _kl(
            candidates(t_fixed, t_sampled, temperature),
            candidates(s_fixed, s_sampled, temperature),
        )
        return alpha * temperature**2 * kl + (1.0 - alpha) * ce

    return loss
