"""Cloze training loop for the BERT4Rec teacher.

The training step runs under a ``tf.distribute`` strategy: the default strategy on
one device, ``MirroredStrategy`` for several local devices, or a multi-worker
strategy configured through ``TF_CONFIG`` — the code never assumes one device.
The loss is computed only at masked positions (hidden states are gathered before
the output matmul). The epochs, validation, weight selection and early stopping are
the loop the distillation shares (:func:`edgerec.teacher.loop.train_cloze`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.teacher.cloze import causal_epoch
from edgerec.teacher.config import TeacherConfig, TrainConfig
from edgerec.teacher.loop import ClozeSchedule, EpochLog, train_cloze
from edgerec.teacher.model import BERT4Rec, build_model
from edgerec.teacher.scoring import KerasScorer

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "one-device", "multi-worker")


def get_strategy(name: str) -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name (see :data:`STRATEGIES`)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one-device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise InputError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")


def set_seed(seed: int) -> None:
    """Seed Python, numpy and TF, and make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass
class TrainResult:
    """Outcome of :func:`train_teacher`: the best model and its history."""

    model: BERT4Rec
    best_epoch: int
    best_valid: dict[str, float]
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0
    best_step: int = 0
    steps: int = 0


def sampling_unigrams(split: LeaveOneOutSplit, num_items: int) -> list[float]:
    """Training item counts over the item-table rows ``0 .. n + 1``, for negative sampling.

    Rows 0 (pad) and ``n + 1`` (mask) get 0 so they are never drawn; items never seen in
    training keep a small chance (0.5) so every real item can be a negative.
    """
    counts = np.zeros(num_items + 2, np.float64)
    for seq in split.train:
        np.add.at(counts, np.asarray(seq, np.int64), 1.0)
    return [0.0, *np.maximum(counts[1 : num_items + 1], 0.5).tolist(), 0.0]


def negative_sampler(
    unigrams: list[float], num_sampled: int, distortion: float, key: str
) -> Callable[[tf.Tensor], Any]:
    """A draw of ``num_sampled`` distinct negatives per step, shared by the batch.

    Item-table rows are drawn without replacement with probability proportional to
    ``unigrams ** distortion`` (``unigrams``: one weight per row, see
    :func:`sampling_unigrams`). The returned function takes the true item ids ``[R, 1]``
    (int64) and gives ``tf.random.fixed_unigram_candidate_sampler``'s ``(sampled,
    true_expected_count, sampled_expected_count)``. ``key`` names the config setting in
    the error when ``num_sampled`` is not smaller than the catalog.
    """
    num_items = len(unigrams) - 2
    if num_sampled >= num_items:
        raise InputError(
            f"{key} ({num_sampled}) must be smaller than the catalog ({num_items} items); "
            "use 0 for the full softmax"
        )

    def draw(true: tf.Tensor) -> Any:
        return tf.random.fixed_unigram_candidate_sampler(
            true,
            num_true=1,
            num_sampled=num_sampled,
            unique=True,
            range_max=num_items + 2,
            distortion=distortion,
            unigrams=unigrams,
        )

    return draw


def _loss_fn(
    model: BERT4Rec, split: LeaveOneOutSplit, tc: TrainConfig
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Per-position cross-entropy of masked hidden states ``[M, d]`` vs item ids ``[M]``.

    Full softmax over the catalog by default. With ``tc.sampled_negatives = K`` it is a
    sampled softmax: K distinct negatives per step, shared by the batch, drawn from the
    training counts raised to ``tc.negative_distortion``; ``tf.nn.sampled_softmax_loss``
    subtracts log Q and removes accidental hits, so the full-catalog scores it trains
    are the ones evaluated and exported.
    """
    if not tc.sampled_negatives:

        def full(hidden: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
            logits = tf.cast(model.score_hidden(hidden), tf.float32)
            return tf.nn.sparse_softmax_cross_entropy_with_logits(items - 1, logits)

        return full
    n = model.num_items
    draw = negative_sampler(
        sampling_unigrams(split, n),
        tc.sampled_negatives,
        tc.negative_distortion,
        "train.sampled_negatives",
    )

    def sampled(hidden: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        true = tf.cast(items[:, None], tf.int64)
        candidates = draw(true)
        h = tf.cast(model.head_norm(model.head_dense(hidden)), tf.float32)
        return tf.nn.sampled_softmax_loss(
            weights=tf.cast(model.item_embedding.embeddings, tf.float32),
            biases=tf.cast(model.output_bias, tf.float32),
            labels=true,
            inputs=h,
            num_sampled=tc.sampled_negatives,
            num_classes=n + 2,
            sampled_values=candidates,
            remove_accidental_hits=True,
        )

    return sampled


def train_teacher(
    split: LeaveOneOutSplit,
    config: TeacherConfig,
    strategy: str = "default",
    progress: bool = True,
    on_epoch: Callable[[EpochLog], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    valid_split: LeaveOneOutSplit | None = None,
) -> TrainResult:
    """Train a teacher on ``split.train`` with early stopping on validation.

    ``config.model.kind`` picks BERT4Rec (Cloze windows) or SASRec (causal, the next
    item at every position); both use the same loss (full softmax or sampled softmax
    over the catalog at the labelled positions) and the same loop.

    With ``checkpoint_dir``, the best epoch's weights are also written to
    ``checkpoint_dir/best.weights.h5`` whenever validation NDCG@10 improves, so an
    interrupted run keeps its best model. ``valid_split`` (default ``split``) holds the
    validation targets that select the epoch, e.g. a sample of the users.
    """
    mc, tc = config.model, config.train
    set_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    spec = FeatureSpec(max_len=mc.max_len, num_items=split.vocab.num_items)
    strat = get_strategy(strategy)
    replicas = strat.num_replicas_in_sync
    policy = "mixed_bfloat16" if tc.precision == "bfloat16" else "float32"
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        with strat.scope():
            model = build_model(spec.num_items, mc)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    with strat.scope():
        ema = {"use_ema": True, "ema_momentum": tc.ema_momentum} if tc.ema_momentum else {}
        if tc.weight_decay > 0:
            optimizer = keras.optimizers.AdamW(
                tc.learning_rate, weight_decay=tc.weight_decay, **ema
            )
        else:
            optimizer = keras.optimizers.Adam(tc.learning_rate, **ema)
        optimizer.build(model.trainable_variables)
    scorer = KerasScorer(model, spec, tc.eval_batch_size)

    masked_loss = _loss_fn(model, split, tc)

    def step_fn(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            hidden = model.encode(inputs, training=True)
            selected = labels > 0
            ce = masked_loss(tf.boolean_mask(hidden, selected), tf.boolean_mask(labels, selected))
            count = tf.maximum(tf.cast(tf.size(ce), tf.float32), 1.0)
            loss = tf.reduce_sum(ce) / count / replicas
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function(reduce_retracing=True)
    def distributed_step(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        per_replica = strat.run(step_fn, args=(inputs, labels))
        return strat.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def batches(x: np.ndarray, y: np.ndarray) -> Iterable[tuple[Any, Any]]:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(tc.batch_size * replicas)
        return strat.experimental_distribute_dataset(ds.prefetch(tf.data.AUTOTUNE))

    loop = train_cloze(
        model,
        split,
        distributed_step,
        optimizer,
        ClozeSchedule.of(tc),
        rng,
        scorer=scorer,
        batches=batches,
        valid_split=valid_split,
        name="teacher",
        progress=progress,
        on_epoch=on_epoch,
        checkpoint_dir=checkpoint_dir,
        samples=_causal_samples(split, spec, tc) if mc.kind == "sasrec" else None,
    )
    if policy != "float32":
        model = float32_copy(model)
    return TrainResult(
        model,
        loop.best_epoch,
        loop.best_valid,
        loop.history,
        loop.seconds,
        loop.best_step,
        loop.steps,
    )


def _causal_samples(
    split: LeaveOneOutSplit, spec: FeatureSpec, tc: TrainConfig
) -> Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """Next-item windows of ``split.train`` for the causal (SASRec) teacher."""

    def epoch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return causal_epoch(split.train, spec.max_len, spec.mask_id, tc.windows_per_length, rng)

    return epoch


def float32_copy(model: BERT4Rec) -> BERT4Rec:
    """A float32 model with the same weights (mixed-precision training exports fp32)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = type(model)(model.num_items, model.model_cfg, name=model.name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clone.set_weights(model.get_weights())
    return clone
