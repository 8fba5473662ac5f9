"""The step-counted schedule of the Cloze loop and the Cloze mask floor."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.errors import InputError
from edgerec.teacher.cloze import cloze_epoch
from edgerec.teacher.config import TeacherConfig, TrainConfig
from edgerec.teacher.loop import ClozeSchedule, _LoopState


def _schedule(**overrides) -> ClozeSchedule:
    base = dict(
        epochs=100,
        patience=2,
        batch_size=8,
        learning_rate=1e-3,
        mask_prob=0.2,
        last_item_mask_prob=0.0,
        windows_per_length=1.0,
    )
    return ClozeSchedule(**{**base, **overrides})


def _run(state: _LoopState, ndcgs: list[float], steps_between: int) -> list[int]:
    """Feed evaluations; return the steps at which the loop would stop (first only)."""
    for epoch, ndcg in enumerate(ndcgs, start=1):
        for _ in range(steps_between):
            state.add_loss(1.0)
        state.improved({"NDCG@10": ndcg}, epoch)
        if state.should_stop():
            return [state.step]
    return []


def test_patience_in_evaluations_is_the_old_epoch_rule() -> None:
    state = _LoopState(_schedule(patience=2))
    assert _run(state, [0.1, 0.2, 0.2, 0.1, 0.3], steps_between=5) == [20]
    assert state.best_epoch == 2 and state.best_step == 10


def test_min_steps_delays_an_early_stop() -> None:
    state = _LoopState(_schedule(patience=2, min_steps=40))
    # plateau from evaluation 2 on; with min_steps the stop waits for step 40
    assert _run(state, [0.1, 0.2] + [0.2] * 10, steps_between=5) == [40]


def test_patience_in_steps_does_not_depend_on_epoch_length() -> None:
    for steps_between in (3, 10, 25):
        state = _LoopState(_schedule(patience=1, patience_steps=50))
        stop = _run(state, [0.1, 0.2] + [0.1] * 100, steps_between=steps_between)
        # best at evaluation 2; stop at the first evaluation >= 50 steps after it
        best = 2 * steps_between
        assert stop and best + 50 <= stop[0] < best + 50 + steps_between


def test_budget_and_warmup() -> None:
    state = _LoopState(_schedule(max_steps=10, warmup_steps=4))
    factors = []
    for _ in range(10):
        factors.append(state.warmup_factor())
        state.add_loss(1.0)
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[-1] == 1.0
    assert state.out_of_budget()


def test_learning_rate_decay_counts_stale_evaluations() -> None:
    state = _LoopState(_schedule(patience=10, lr_decay_patience=2, lr_decay_factor=0.5))
    state.improved({"NDCG@10": 0.3}, 1)
    decays = []
    for epoch in range(2, 6):
        state.improved({"NDCG@10": 0.1}, epoch)
        decays.append(state.decay_learning_rate())
    assert decays == [False, True, False, True]
    assert state.learning_rate == pytest.approx(2.5e-4)


def test_mask_floor_gives_short_windows_more_targets() -> None:
    seqs = [np.array([1, 2, 3, 4, 5, 6], np.int32)] * 200
    _, y1 = cloze_epoch(seqs, 10, 99, 0.1, 0.0, 1.0, np.random.default_rng(0))
    _, y3 = cloze_epoch(seqs, 10, 99, 0.1, 0.0, 1.0, np.random.default_rng(0), min_masked=3)
    per_window = (y3 > 0).sum(axis=1)
    assert per_window.min() == 3  # ceil(6 / 2) = 3 caps the floor of 3
    assert (y3 > 0).sum() > 2 * (y1 > 0).sum()
    # masked labels are still the items at those positions, never padding
    assert ((y3 > 0).sum(axis=1) <= 6).all() and (y3[:, :4] == 0).all()


def test_default_mask_floor_draws_what_it_always_did() -> None:
    seqs = [np.arange(1, 30, dtype=np.int32)] * 20
    a = cloze_epoch(seqs, 12, 99, 0.2, 0.1, 1.0, np.random.default_rng(5))
    b = cloze_epoch(seqs, 12, 99, 0.2, 0.1, 1.0, np.random.default_rng(5), min_masked=1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))


def test_schedule_keys_validate_and_reach_the_loop() -> None:
    config = TeacherConfig.defaults()
    assert config.train.min_steps == 0 and config.train.max_steps == 0
    train = config.with_overrides(max_steps=500, warmup_steps=50, min_steps=1000).train
    schedule = ClozeSchedule.of(train)
    assert (schedule.max_steps, schedule.warmup_steps, schedule.min_steps) == (500, 50, 1000)
    with pytest.raises(InputError, match="train.patience_steps"):
        TrainConfig(patience_steps=-1).validate()
    with pytest.raises(InputError, match="train.min_masked"):
        TrainConfig(min_masked=0).validate()


@pytest.mark.slow
def test_real_loop_validates_every_n_steps_within_the_budget(walk_split) -> None:
    from edgerec.teacher.config import ModelConfig
    from edgerec.teacher.train import train_teacher

    config = TeacherConfig(
        model=ModelConfig(max_len=8, d_model=16, num_blocks=1, num_heads=2, ffn_dim=32),
        train=TrainConfig(batch_size=64, max_steps=7, eval_every_steps=3, warmup_steps=2, seed=1),
    ).validate()
    result = train_teacher(walk_split, config, progress=False)
    # validation every 3 steps and once more for the last, partial stretch of the budget
    assert [h.step for h in result.history] == [3, 6, 7]
    assert result.steps == 7 and result.best_step in (3, 6, 7)
