"""Distil pass: train a small BERT4Rec student on the teacher's soft targets.

Loss at the masked positions of Cloze windows (the teacher's own training
objective, :func:`edgerec.teacher.cloze.cloze_epoch`)::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + (1 - alpha) * CE(ground-truth item, student)

over the full catalog, or with ``distil.sampled_negatives = K`` over the target, the
teacher's top items and K sampled negatives (:mod:`edgerec.converters.passes.kd_loss`).

The teacher's logits come from running the teacher on the *same* masked windows
(left-padded to its own length when the student's is shorter), inference mode,
no gradient. ``alpha = 0`` trains the same student on ground truth alone (the
ablation the benchmark compares against) and skips the teacher entirely.

The student is converter-friendly by construction (:mod:`edgerec.teacher.model`):
finite attention-mask logit, tanh GELU, whole-table scoring then output slicing.
The epochs, early stopping and the choice of the epoch with the best validation
NDCG@10 (full ranking) are the teacher's loop (:func:`edgerec.teacher.loop.train_cloze`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edgerec.converters.config import DistilConfig, validate_student
from edgerec.converters.passes.kd_loss import KDLoss, full_kd_loss, sampled_kd_loss
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.teacher.config import ModelConfig
from edgerec.teacher.loop import ClozeSchedule, train_cloze
from edgerec.teacher.model import BERT4Rec
from edgerec.teacher.scoring import KerasScorer
from edgerec.teacher.train import negative_sampler, sampling_unigrams, set_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistilOptions:
    """Options of the distil pass."""

    student: ModelConfig  # resolved student architecture (max_len set)
    distil: DistilConfig
    progress: bool = True
    name: str = "student"


@dataclass
class StudentArtifact:
    """Output of the distil pass: the trained Keras student and its history."""

    model: BERT4Rec
    spec: FeatureSpec
    config: ModelConfig
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    alpha: float = 0.0

    @property
    def num_params(self) -> int:
        return int(sum(int(np.prod(w.shape)) for w in self.model.weights))


def resolve_student(student: ModelConfig, teacher: ModelConfig) -> ModelConfig:
    """The student's :class:`ModelConfig` with its length set, checked against the teacher's.

    Raises :class:`InputError` for impossible settings: a student length longer
    than the teacher's, or a student that is not smaller than the teacher.
    """
    validate_student(student)
    max_len = teacher.max_len if student.max_len is None else student.max_len
    if max_len > teacher.max_len:
        raise InputError(
            f"student.max_len ({max_len}) exceeds the teacher's max_len ({teacher.max_len}): "
            "the teacher cannot score longer windows; use at most the teacher's length"
        )
    cfg = replace(student, max_len=max_len)
    if student.d_model > teacher.d_model or encoder_params(cfg) >= encoder_params(teacher):
        raise InputError(
            f"the student (d_model={cfg.d_model}, {cfg.num_blocks} blocks, ffn {cfg.ffn_dim}, "
            f"{encoder_params(cfg):,} encoder parameters) is not smaller than the teacher "
            f"(d_model={teacher.d_model}, {teacher.num_blocks} blocks, ffn {teacher.ffn_dim}, "
            f"{encoder_params(teacher):,}); distillation needs a smaller student"
        )
    return cfg


def encoder_params(cfg: ModelConfig, num_items: int = 0) -> int:
    """Parameter count of a BERT4Rec with ``num_items`` items (0: without the item table)."""
    d, f = cfg.d_model, cfg.ffn_dim
    block = 3 * d * d + 3 * d + d * d + d + d * f + f + f * d + d + 4 * d
    rest = cfg.max_len * d + 2 * d + d * d + d + 2 * d
    table = (num_items + 2) * (d + 1) if num_items else 0
    return cfg.num_blocks * block + rest + table


def _kd_loss(
    student: BERT4Rec, split: LeaveOneOutSplit, dc: DistilConfig, alpha: float, temperature: float
) -> KDLoss:
    """The full-catalog loss, or the sampled one when ``distil.sampled_negatives > 0``."""
    if not dc.sampled_negatives:
        return full_kd_loss(student, alpha, temperature)
    draw = negative_sampler(
        sampling_unigrams(split, split.vocab.num_items),
        dc.sampled_negatives,
        dc.negative_distortion,
        "distil.sampled_negatives",
    )
    return sampled_kd_loss(
        student,
        alpha,
        temperature,
        draw_negatives=draw,
        num_sampled=dc.sampled_negatives,
        teacher_top_k=dc.teacher_top_k,
    )


def init_item_table_from_teacher(student: BERT4Rec, teacher: keras.Model) -> None:
    """Start the student's item table and output bias from the teacher's.

    The table is the teacher's projected on its top ``d_student`` singular directions
    (``U_d S_d`` of the SVD), which keeps the item-item dot products the teacher learned
    as well as ``d_student`` dimensions can; the output biases are copied. The encoder
    still starts from scratch. On a large catalog most parameters are in the table and
    each item is seen a few times per epoch, so this saves most of the student's epochs.
    """
    table = np.asarray(teacher.item_embedding.embeddings.numpy(), np.float64)
    rows, d = student.item_embedding.embeddings.shape
    if table.shape[0] != rows:
        raise InputError(
            f"teacher item table has {table.shape[0]} rows, the student's {rows}: "
            "different vocabularies"
        )
    u, s, _ = np.linalg.svd(table, full_matrices=False)
    projected = (u[:, :d] * s[:d]).astype(np.float32)
    student.item_embedding.embeddings.assign(projected)
    student.output_bias.assign(np.asarray(teacher.output_bias.numpy(), np.float32))


def run(
    split: LeaveOneOutSplit,
    options: DistilOptions,
    teacher: keras.Model | None = None,
) -> StudentArtifact:
    """Train the student on ``split.train``; ``teacher`` is required when ``alpha > 0``."""
    mc, dc = options.student, options.distil
    alpha = float(dc.alpha)
    if alpha > 0 and teacher is None:
        raise InputError("distillation with alpha > 0 needs a teacher model")
    if dc.init_from_teacher and teacher is None:
        raise InputError("distil.init_from_teacher needs a teacher model")
    # Fresh Keras name counters: auto-generated layer names end up in the exported
    # graphs' tensor names, so without this the same seed gives the same numbers but
    # different artifact bytes depending on what the process built before.
    keras.utils.clear_session(free_memory=False)
    set_seed(dc.seed)
    rng = np.random.default_rng(dc.seed)
    spec = FeatureSpec(max_len=mc.max_len, num_items=split.vocab.num_items)
    student = BERT4Rec(spec.num_items, mc, name=options.name)
    if dc.init_from_teacher:
        init_item_table_from_teacher(student, teacher)
    ema = {"use_ema": True, "ema_momentum": dc.ema_momentum} if dc.ema_momentum else {}
    optimizer = keras.optimizers.Adam(dc.learning_rate, **ema)
    optimizer.build(student.trainable_variables)
    scorer = KerasScorer(student, spec)
    temperature = float(dc.temperature)
    pad = 0
    if teacher is not None and alpha > 0:
        pad = int(teacher.max_len) - mc.max_len

    kd_loss = _kd_loss(student, split, dc, alpha, temperature)
    use_teacher = teacher is not None and alpha > 0

    def teacher_logits(inputs: tf.Tensor, selected: tf.Tensor) -> tf.Tensor:
        t_in = tf.pad(inputs, [[0, 0], [pad, 0]]) if pad else inputs
        hidden = teacher.cloze_hidden(t_in, training=False)[:, pad:, :]
        logits = teacher.score_hidden(tf.boolean_mask(hidden, selected))
        return tf.stop_gradient(tf.cast(logits, tf.float32))

    def loss_fn(inputs: tf.Tensor, labels: tf.Tensor, training: bool) -> tf.Tensor:
        selected = labels > 0
        hidden = tf.boolean_mask(student.encode(inputs, training=training), selected)
        t_logits = teacher_logits(inputs, selected) if use_teacher else None
        return tf.reduce_mean(kd_loss(hidden, t_logits, tf.boolean_mask(labels, selected)))

    @tf.function(reduce_retracing=True)
    def train_step(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(inputs, labels, True)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss

    desc = f"distil {options.name}" if alpha > 0 else f"train {options.name} (no teacher)"
    loop = train_cloze(
        student,
        split,
        train_step,
        optimizer,
        ClozeSchedule.of(dc),
        rng,
        scorer=scorer,
        name=options.name,
        progress=options.progress,
        desc=desc,
    )
    return StudentArtifact(
        model=student,
        spec=spec,
        config=mc,
        best_epoch=loop.best_epoch,
        best_valid=loop.best_valid,
        history=[
            {"epoch": h.epoch, "loss": h.loss, "valid": h.valid, "seconds": h.seconds}
            for h in loop.history
        ],
        seconds=loop.seconds,
        alpha=alpha,
    )
