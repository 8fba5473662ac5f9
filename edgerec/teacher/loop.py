"""The early-stopped Cloze training loop of BERT4Rec models (teacher and student).

``edgerec train`` (:func:`edgerec.teacher.train.train_teacher`) and the converter's
distillation (:mod:`edgerec.converters.passes.distil`) differ only in their training step:
the loss, the optimiser and how a batch reaches the device. Everything around the
step is this one loop: a fresh Cloze epoch (:func:`~edgerec.teacher.cloze.cloze_epoch`)
per epoch, the mean step loss, validation NDCG@10 with full ranking after every epoch
(:func:`validation_metrics`), the best epoch's weights kept (the optimiser's averaged
weights when it keeps an exponential moving average), an optional reduce-on-plateau
learning rate, early stopping after ``patience`` epochs without gain, and a progress
bar. The loop draws random numbers only from the ``rng`` it is given, so the same seed
gives the same epochs and the same metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.metrics import metrics_from_ranks, target_ranks
from edgerec.teacher.cloze import cloze_epoch
from edgerec.teacher.scoring import KerasScorer

log = logging.getLogger(__name__)

#: a training step: ``(inputs [B, L], labels [B, L]) -> loss`` (a scalar tensor)
Step = Callable[[Any, Any], Any]
#: how an epoch's arrays ``(inputs, labels)`` become the batches a step takes
Batches = Callable[[np.ndarray, np.ndarray], Iterable[tuple[Any, Any]]]


@dataclass(frozen=True)
class ClozeSchedule:
    """What the loop needs of a configuration (``[train]`` or ``[distil]``).

    The names are the configuration keys, so :meth:`of` reads them from either table;
    the learning-rate decay is off (factor 1) where a table has no such keys.
    """

    epochs: int
    patience: int
    batch_size: int
    learning_rate: float
    mask_prob: float
    last_item_mask_prob: float
    windows_per_length: float
    lr_decay_patience: int = 1
    lr_decay_factor: float = 1.0
    min_learning_rate: float = 0.0

    @classmethod
    def of(cls, config: Any) -> ClozeSchedule:
        """The schedule of a config dataclass with (some of) the same field names."""
        names = [f.name for f in fields(cls)]
        return cls(**{n: getattr(config, n) for n in names if hasattr(config, n)})


@dataclass
class EpochLog:
    """One epoch: mean training loss, validation metrics, wall time, learning rate."""

    epoch: int
    loss: float
    valid: dict[str, float]
    seconds: float
    learning_rate: float = 0.0


@dataclass
class LoopResult:
    """Outcome of :func:`train_cloze`; the model holds the best epoch's weights."""

    best_epoch: int
    best_valid: dict[str, float]
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0


def validation_metrics(
    scorer: KerasScorer, split: LeaveOneOutSplit, chunk: int = 256
) -> dict[str, float]:
    """Validation HR/NDCG/MRR@10 (full ranking, history kept), scored in chunks.

    Memory stays at ``chunk x n`` scores, so a 100k-item catalog with tens of thousands
    of users does not need a ``users x n`` matrix. The chunk is rounded up to whole
    scorer batches, so the model sees the same batches as when scoring all rows at once
    (and gives the same scores to the last bit).
    """
    rows = scorer.spec.encode_batch(split.valid_inputs())
    targets = np.asarray(split.valid_target)
    chunk = scorer.batch_size * max(1, math.ceil(chunk / scorer.batch_size))
    ranks = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        scores = scorer.score_rows(rows[start : start + chunk])
        ranks[start : start + chunk] = target_ranks(scores, targets[start : start + chunk])
    return metrics_from_ranks(ranks, ks=(10,))


def constant_batches(batch_size: int) -> Batches:
    """Consecutive ``batch_size`` rows as constant tensors (one device, no tf.data)."""

    def batches(x: np.ndarray, y: np.ndarray) -> Iterable[tuple[Any, Any]]:
        for start in range(0, len(x), batch_size):
            yield (
                tf.constant(x[start : start + batch_size]),
                tf.constant(y[start : start + batch_size]),
            )

    return batches


def train_cloze(
    model: keras.Model,
    split: LeaveOneOutSplit,
    step: Step,
    optimizer: keras.optimizers.Optimizer,
    schedule: ClozeSchedule,
    rng: np.random.Generator,
    *,
    scorer: KerasScorer,
    batches: Batches | None = None,
    valid_split: LeaveOneOutSplit | None = None,
    name: str = "model",
    progress: bool = True,
    desc: str | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> LoopResult:
    """Train ``model`` with ``step`` on Cloze epochs of ``split.train``, early-stopped.

    Args:
        model: the BERT4Rec being trained (its ``max_len`` sets the windows).
        step: one optimisation step on a batch, returning its loss.
        optimizer: the step's optimiser: its averaged weights are validated and kept
            when it has ``use_ema``; its learning rate is lowered on plateaus.
        schedule: epochs, patience, batch size and Cloze masking.
        rng: the only source of randomness of the epochs.
        scorer: scores validation rows with ``model``.
        batches: turns an epoch into batches (default :func:`constant_batches`).
        valid_split: whose validation targets select the epoch (default ``split``;
            a subset of its users keeps validation cheap on a large population).
        name: names the model in logs and errors.
        progress: show a progress bar (``desc`` its text, default ``train {name}``).
        on_epoch: called with every epoch's log.
        checkpoint_dir: write the best weights to ``best.weights.h5`` there whenever
            validation NDCG@10 improves, so an interrupted run keeps its best model.
    """
    batches = batches or constant_batches(schedule.batch_size)
    max_len, mask_id = scorer.spec.max_len, scorer.spec.mask_id
    best_ndcg, best_epoch, best_valid = -1.0, 0, {}
    best_weights: list[np.ndarray] | None = None
    history: list[EpochLog] = []
    learning_rate = schedule.learning_rate
    started = time.perf_counter()
    bar = tqdm(
        range(1, schedule.epochs + 1),
        desc=desc or f"train {name}",
        unit="epoch",
        disable=not progress,
    )
    for epoch in bar:
        t0 = time.perf_counter()
        x, y = cloze_epoch(
            split.train,
            max_len,
            mask_id,
            schedule.mask_prob,
            schedule.last_item_mask_prob,
            schedule.windows_per_length,
            rng,
        )
        total, steps = 0.0, 0
        for inputs, labels in batches(x, y):
            total += float(step(inputs, labels))
            steps += 1
        loss = total / max(steps, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"{name}: training diverged at epoch {epoch} (loss {loss})")
        # With weight averaging, validate (and keep) the averaged weights, then put the
        # raw training weights back so the optimiser continues from them.
        raw_weights = None
        if optimizer.use_ema:
            raw_weights = [v.numpy() for v in model.trainable_variables]
            optimizer.finalize_variable_values(model.trainable_variables)
        valid = validation_metrics(scorer, valid_split or split)
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
        log.debug("%s: epoch %d loss %.4f valid %s", name, epoch, loss, valid)
        stale = epoch - best_epoch
        if stale and stale % schedule.lr_decay_patience == 0 and schedule.lr_decay_factor < 1.0:
            learning_rate = max(
                learning_rate * schedule.lr_decay_factor, schedule.min_learning_rate
            )
            optimizer.learning_rate.assign(learning_rate)
            log.debug("%s: epoch %d: learning rate -> %.2e", name, epoch, learning_rate)
        if stale >= schedule.patience:
            log.info("%s: early stop at epoch %d (best %d)", name, epoch, best_epoch)
            break
    if best_weights is not None:
        for var, value in zip(model.weights, best_weights, strict=True):
            var.assign(value)
    seconds = time.perf_counter() - started
    log.info(
        "%s: best epoch %d/%d, valid NDCG@10 %.4f (%.0f s)",
        name,
        best_epoch,
        len(history),
        best_ndcg,
        seconds,
    )
    return LoopResult(best_epoch, best_valid, history, seconds)
