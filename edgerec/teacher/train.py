"""Cloze training loop for the BERT4Rec teacher.

A custom loop under a ``tf.distribute`` strategy: the default strategy on one
device, ``MirroredStrategy`` for several local devices, or a multi-worker
strategy configured through ``TF_CONFIG`` — the code never assumes one device.
The loss is computed only at masked positions (hidden states are gathered before
the output matmul). Validation NDCG@10 (full ranking) is measured after every
epoch; the best epoch's weights are kept and training stops early when it has
not improved for ``patience`` epochs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.metrics import metrics_from_ranks, target_ranks
from edgerec.teacher.cloze import cloze_epoch
from edgerec.teacher.config import TeacherConfig, TrainConfig
from edgerec.teacher.model import BERT4Rec
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
class EpochLog:
    epoch: int
    loss: float
    valid: dict[str, float]
    seconds: float
    learning_rate: float = 0.0


@dataclass
class TrainResult:
    """Outcome of :func:`train_teacher`: the best model and its history."""

    model: BERT4Rec
    best_epoch: int
    best_valid: dict[str, float]
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0


def validation_metrics(scorer: KerasScorer, split: LeaveOneOutSplit) -> dict[str, float]:
    """Validation HR/NDCG/MRR@10 with full ranking (history kept)."""
    rows = scorer.spec.encode_batch(split.valid_inputs())
    scores = scorer.score_rows(rows)
    return metrics_from_ranks(target_ranks(scores, split.valid_target), ks=(10,))


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
) -> TrainResult:
    """Train a BERT4Rec teacher on ``split.train`` with early stopping on validation.

    With ``checkpoint_dir``, the best epoch's weights are also written to
    ``checkpoint_dir/best.weights.h5`` whenever validation NDCG@10 improves, so an
    interrupted run keeps its best model.
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
            model = BERT4Rec(spec.num_items, mc, name="bert4rec")
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

    best_ndcg, best_epoch, best_valid = -1.0, 0, {}
    best_weights: list[np.ndarray] | None = None
    history: list[EpochLog] = []
    learning_rate = tc.learning_rate
    started = time.perf_counter()
    bar = tqdm(range(1, tc.epochs + 1), desc="train teacher", unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        x, y = cloze_epoch(
            split.train,
            mc.max_len,
            spec.mask_id,
            tc.mask_prob,
            tc.last_item_mask_prob,
            tc.windows_per_length,
            rng,
        )
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(tc.batch_size * replicas)
        ds = strat.experimental_distribute_dataset(ds.prefetch(tf.data.AUTOTUNE))
        total, steps = 0.0, 0
        for inputs, labels in ds:
            total += float(distributed_step(inputs, labels))
            steps += 1
        loss = total / max(steps, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss})")
        # With weight averaging, validate (and keep) the averaged weights, then put the
        # raw training weights back so the optimiser continues from them.
        raw_weights = None
        if optimizer.use_ema:
            raw_weights = [v.numpy() for v in model.trainable_variables]
            optimizer.finalize_variable_values(model.trainable_variables)
        valid = validation_metrics(scorer, split)
        entry = EpochLog(epoch, loss, valid, time.perf_counter() - t0, learning_rate)
        history.append(entry)
        if on_epoch:
            on_epoch(entry)
        if valid["NDCG@10"] > best_ndcg:
            best_ndcg, best_epoch, best_valid = valid["NDCG@10"], epoch, valid
            best_weights = [w.numpy().copy() for w in model.weights]
            if checkpoint_dir is not None:
                Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
                model.save_weights(Path(checkpoint_dir) / "best.weights.h5")
        if raw_weights is not None:
            for var, value in zip(model.trainable_variables, raw_weights, strict=True):
                var.assign(value)
        bar.set_postfix(loss=f"{loss:.3f}", val_ndcg=f"{valid['NDCG@10']:.4f}", best=best_epoch)
        log.debug("epoch %d loss %.4f valid %s", epoch, loss, valid)
        stale = epoch - best_epoch
        if stale and stale % tc.lr_decay_patience == 0 and tc.lr_decay_factor < 1.0:
            learning_rate = max(learning_rate * tc.lr_decay_factor, tc.min_learning_rate)
            optimizer.learning_rate.assign(learning_rate)
            log.debug("epoch %d: learning rate -> %.2e", epoch, learning_rate)
        if stale >= tc.patience:
            log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
            break
    if best_weights is not None:
        for var, value in zip(model.weights, best_weights, strict=True):
            var.assign(value)
    if policy != "float32":
        model = float32_copy(model)
    return TrainResult(model, best_epoch, best_valid, history, time.perf_counter() - started)


def float32_copy(model: BERT4Rec) -> BERT4Rec:
    """A float32 model with the same weights (mixed-precision training exports fp32)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = BERT4Rec(model.num_items, model.model_cfg, name=model.name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clone.set_weights(model.get_weights())
    return clone
