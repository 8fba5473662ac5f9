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

The schedule can also be counted in optimizer steps, so that it does not depend on
how long an epoch is (a log of a few thousand short sequences has epochs of a few
dozen steps): ``max_steps`` (budget, replaces ``epochs``), ``warmup_steps`` (linear
learning-rate warm-up), ``eval_every_steps`` (validate every N steps instead of at
each epoch's end), ``patience_steps`` (stop after N steps without gain instead of
``patience`` evaluations) and ``min_steps`` (early stopping cannot fire before). With
all of them 0 except ``min_steps`` the loop is the epoch loop it always was, and
``min_steps`` only delays a stop that would have come sooner.
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
    max_steps: int = 0
    warmup_steps: int = 0
    eval_every_steps: int = 0
    patience_steps: int = 0
    min_steps: int = 0
    min_masked: int = 1

    @classmethod
    def of(cls, config: Any) -> ClozeSchedule:
        """The schedule of a config dataclass with (some of) the same field names."""
        names = [f.name for f in fields(cls)]
        return cls(**{n: getattr(config, n) for n in names if hasattr(config, n)})


@dataclass
class EpochLog:
    """One validation: mean training loss since the last one, validation metrics, wall
    time, learning rate, and the optimizer steps taken so far (``step``)."""

    epoch: int
    loss: float
    valid: dict[str, float]
    seconds: float
    learning_rate: float = 0.0
    step: int = 0


@dataclass
class LoopResult:
    """Outcome of :func:`train_cloze`; the model holds the best epoch's weights."""

    best_epoch: int
    best_valid: dict[str, float]
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0
    best_step: int = 0
    steps: int = 0


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
    samples: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None,
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
        samples: builds one epoch's ``(inputs, labels)`` from ``rng`` (default: Cloze
            windows of ``split.train`` with the schedule's masking; the causal teacher
            passes its next-item windows).
    """
    batches = batches or constant_batches(schedule.batch_size)
    max_len, mask_id = scorer.spec.max_len, scorer.spec.mask_id
    state = _LoopState(schedule)
    best_weights: list[np.ndarray] | None = None
    history: list[EpochLog] = []
    started = time.perf_counter()
    epochs = schedule.epochs if not schedule.max_steps else 10**9
    bar = tqdm(
        total=schedule.max_steps or schedule.epochs,
        desc=desc or f"train {name}",
        unit="step" if schedule.max_steps else "epoch",
        disable=not progress,
    )

    def validate(epoch: int, t0: float) -> bool:
        """Validate, keep the best weights, decay the learning rate; True to stop."""
        nonlocal best_weights
        loss = state.take_loss()
        if not math.isfinite(loss):
            raise FloatingPointError(f"{name}: training diverged at epoch {epoch} (loss {loss})")
        # With weight averaging, validate (and keep) the averaged weights, then put the
        # raw training weights back so the optimiser continues from them.
        raw_weights = None
        if optimizer.use_ema:
            raw_weights = [v.numpy() for v in model.trainable_variables]
            optimizer.finalize_variable_values(model.trainable_variables)
        valid = validation_metrics(scorer, valid_split or split)
        entry = EpochLog(
            epoch, loss, valid, time.perf_counter() - t0, state.learning_rate, state.step
        )
        history.append(entry)
        if on_epoch:
            on_epoch(entry)
        if state.improved(valid, epoch):
            best_weights = [w.numpy().copy() for w in model.weights]
            if checkpoint_dir is not None:
                Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
                model.save_weights(Path(checkpoint_dir) / "best.weights.h5")
        if raw_weights is not None:
            for var, value in zip(model.trainable_variables, raw_weights, strict=True):
                var.assign(value)
        bar.set_postfix(
            loss=f"{loss:.3f}", val_ndcg=f"{valid['NDCG@10']:.4f}", best=state.best_epoch
        )
        log.debug("%s: epoch %d step %d loss %.4f valid %s", name, epoch, state.step, loss, valid)
        if state.decay_learning_rate():
            optimizer.learning_rate.assign(state.learning_rate * state.warmup_factor())
            log.debug("%s: epoch %d: learning rate -> %.2e", name, epoch, state.learning_rate)
        if state.should_stop():
            log.info(
                "%s: early stop at epoch %d, step %d (best epoch %d, step %d)",
                name,
                epoch,
                state.step,
                state.best_epoch,
                state.best_step,
            )
            return True
        return False

    stop = False
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        if samples is not None:
            x, y = samples(rng)
        else:
            x, y = cloze_epoch(
                split.train,
                max_len,
                mask_id,
                schedule.mask_prob,
                schedule.last_item_mask_prob,
                schedule.windows_per_length,
                rng,
                min_masked=schedule.min_masked,
            )
        for inputs, labels in batches(x, y):
            if schedule.warmup_steps and state.step <= schedule.warmup_steps:
                optimizer.learning_rate.assign(state.learning_rate * state.warmup_factor())
            state.add_loss(float(step(inputs, labels)))
            if schedule.max_steps:
                bar.update(1)
            if schedule.eval_every_steps and state.step % schedule.eval_every_steps == 0:
                stop = validate(epoch, t0)
                t0 = time.perf_counter()
            if stop or state.out_of_budget():
                break
        if not schedule.max_steps:
            bar.update(1)
        if stop:
            break
        if not schedule.eval_every_steps:
            stop = validate(epoch, t0)
        if stop or state.out_of_budget():
            break
    if not stop and schedule.eval_every_steps and state.unvalidated_steps():
        validate(epoch, t0)  # the steps after the last validation count too
    bar.close()
    if best_weights is not None:
        for var, value in zip(model.weights, best_weights, strict=True):
            var.assign(value)
    seconds = time.perf_counter() - started
    log.info(
        "%s: best epoch %d (step %d of %d), valid NDCG@10 %.4f (%.0f s)",
        name,
        state.best_epoch,
        state.best_step,
        state.step,
        state.best_ndcg,
        seconds,
    )
    return LoopResult(
        state.best_epoch, state.best_valid, history, seconds, state.best_step, state.step
    )


class _LoopState:
    """Step and evaluation counting, best-so-far, learning rate, and the stop rules."""

    def __init__(self, schedule: ClozeSchedule) -> None:
        self.schedule = schedule
        self.step = 0
        self.learning_rate = schedule.learning_rate
        self.best_ndcg, self.best_epoch, self.best_step = -1.0, 0, 0
        self.best_valid: dict[str, float] = {}
        self.evaluations = 0
        self.best_evaluation = 0
        self.last_validated_step = 0
        self._loss_total, self._loss_steps = 0.0, 0

    def add_loss(self, loss: float) -> None:
        self.step += 1
        self._loss_total += loss
        self._loss_steps += 1

    def take_loss(self) -> float:
        """Mean step loss since the last validation (resets the sum)."""
        loss = self._loss_total / max(self._loss_steps, 1)
        self._loss_total, self._loss_steps = 0.0, 0
        return loss

    def unvalidated_steps(self) -> int:
        return self.step - self.last_validated_step

    def warmup_factor(self) -> float:
        warmup = self.schedule.warmup_steps
        return min(1.0, (self.step + 1) / warmup) if warmup else 1.0

    def improved(self, valid: dict[str, float], epoch: int) -> bool:
        self.evaluations += 1
        self.last_validated_step = self.step
        if valid["NDCG@10"] > self.best_ndcg:
            self.best_ndcg, self.best_valid = valid["NDCG@10"], valid
            self.best_epoch, self.best_step = epoch, self.step
            self.best_evaluation = self.evaluations
            return True
        return False

    @property
    def stale(self) -> int:
        """Evaluations since the best one."""
        return self.evaluations - self.best_evaluation

    def decay_learning_rate(self) -> bool:
        """Reduce-on-plateau after ``lr_decay_patience`` stale evaluations; True if changed."""
        s = self.schedule
        if self.stale and self.stale % s.lr_decay_patience == 0 and s.lr_decay_factor < 1.0:
            self.learning_rate = max(self.learning_rate * s.lr_decay_factor, s.min_learning_rate)
            return True
        return False

    def should_stop(self) -> bool:
        s = self.schedule
        if self.step < s.min_steps:
            return False
        if s.patience_steps:
            return self.stale > 0 and self.step - self.best_step >= s.patience_steps
        return self.stale >= s.patience

    def out_of_budget(self) -> bool:
        return bool(self.schedule.max_steps) and self.step >= self.schedule.max_steps
