"""The teacher gate: baselines fitted on a split, paired-bootstrap margins, exit 3."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.baselines import ItemTransition
from edgerec.errors import InputError
from edgerec.teacher.baselines import BASELINES, KNN, MOST_POPULAR, TRANSITION, fit_baselines
from edgerec.teacher.gate import WeakTeacherError, enforce, gate_scorer, teacher_gate

from .conftest import make_sequential_split


@pytest.fixture(scope="module")
def split():
    return make_sequential_split(num_users=300, num_items=40, length=15)


@pytest.fixture(scope="module")
def suite(split):
    return fit_baselines(split)


def test_suite_tunes_on_validation_and_ranks_every_user(split, suite) -> None:
    assert set(suite.valid_ranks) == set(BASELINES) == set(suite.test_models)
    for ranks in suite.valid_ranks.values():
        assert ranks.shape == (len(split.train),)
    assert set(suite.tuned) == {TRANSITION, KNN}
    # the walk is first-order: transitions are far ahead of popularity
    assert suite.valid_ranks[TRANSITION].mean() < suite.valid_ranks[MOST_POPULAR].mean() / 3


def test_a_copy_of_popularity_fails_and_a_better_teacher_passes(split, suite) -> None:
    weak = teacher_gate(suite.valid_ranks[MOST_POPULAR], suite)
    assert not weak.passed and set(weak.failed) == {MOST_POPULAR, TRANSITION}
    assert "--allow-weak-teacher" in weak.message() and "what to try" in weak.message()
    # An oracle-ish teacher: the target first for every user.
    strong = teacher_gate(np.zeros(len(split.train), np.int64), suite)
    assert strong.passed and not strong.failed
    assert strong.comparisons[TRANSITION].low > 0
    assert strong.to_json()["comparisons"][MOST_POPULAR]["significant"]


def test_equal_to_a_baseline_is_not_enough(suite) -> None:
    # The transition model itself does not beat the transition model.
    same = teacher_gate(suite.valid_ranks[TRANSITION], suite)
    assert TRANSITION in same.failed and MOST_POPULAR not in same.failed


def test_gate_scorer_scores_any_teacher(split, suite) -> None:
    # A "teacher" that is a transition model: it ties its own baseline, so it fails.
    teacher = ItemTransition(40, **suite.tuned[TRANSITION].params).fit(split.train)
    result, _ = gate_scorer(teacher, split, suite)
    assert not result.passed and result.failed == (TRANSITION,)
    # scores + targets are accepted as well as ranks
    scores = teacher.scores(split.valid_inputs())
    again = teacher_gate(scores, suite, targets=split.valid_target)
    assert again.teacher == pytest.approx(result.teacher)


def test_enforce_raises_exit_3_unless_allowed(suite) -> None:
    weak = teacher_gate(suite.valid_ranks[MOST_POPULAR], suite)
    with pytest.raises(WeakTeacherError) as info:
        enforce(weak, allow_weak_teacher=False, who="edgerec train")
    assert info.value.exit_code == 3 and info.value.result is weak
    enforce(weak, allow_weak_teacher=True, who="edgerec train")  # warns only


def test_gate_rejects_mismatched_or_missing_input(suite) -> None:
    with pytest.raises(InputError, match="same validation users"):
        teacher_gate(np.zeros(3, np.int64), suite)
    with pytest.raises(InputError, match="required baseline"):
        teacher_gate(np.zeros(3, np.int64), {MOST_POPULAR: np.zeros(3, np.int64)})
    with pytest.raises(InputError, match="targets"):
        teacher_gate(np.zeros((3, 5)), {MOST_POPULAR: np.zeros(3, np.int64)}, required=())
