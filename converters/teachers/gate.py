"""The teacher gate for teachers edgerec did not train: the same rule as edgerec's own.

A teacher from a ``teacher.toml`` is gated exactly like a teacher ``edgerec train``
wrote (:mod:`edgerec.teacher.gate`): on the validation split (the user's second-last
item, full ranking over the whole catalog, history kept) it must beat most-popular and
the item-transition baseline tuned on validation by a margin whose paired-bootstrap
interval excludes 0; the session-kNN baseline is reported beside them. A teacher that
loses is refused with exit 3 (:class:`~edgerec.teacher.gate.WeakTeacherError`), the
measured numbers and the likely causes: for a teacher that was fine in its own code the
usual culprits are the descriptor (padding side, ``[MASK]`` setting, output position,
vocabulary order), which all turn a good model into a weak one rather than a crashing
one. ``--allow-weak-teacher`` overrides it and the bundle records that.
"""

from __future__ import annotations

import logging

import numpy as np

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.metrics import evaluate
from edgerec.teacher.baselines import BaselineSuite, fit_baselines
from edgerec.teacher.gate import GateResult, WeakTeacherError, teacher_gate

from .base import ContractScorer

log = logging.getLogger(__name__)

LIKELY_CAUSES = (
    "for a teacher trained elsewhere, check the descriptor first: padding side "
    "(input.padding), [MASK] setting (input.mask), output.position and the vocabulary "
    "order turn a good model into a weak one without an error — or the teacher is "
    "undertrained"
)


def validation_users(split: LeaveOneOutSplit, max_users: int, seed: int) -> np.ndarray:
    """The users the gate scores: all with a history, or a seeded sample of ``max_users``."""
    users = np.flatnonzero([len(h) > 0 for h in split.train])
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def check_teacher(
    scorer: ContractScorer,
    split: LeaveOneOutSplit,
    *,
    suite: BaselineSuite | None = None,
    max_users: int = 0,
    seed: int = 0,
    progress: bool = False,
    allow_weak_teacher: bool = False,
) -> tuple[GateResult, BaselineSuite]:
    """Gate ``scorer`` on the validation split; returns the verdict and the fitted baselines.

    Raises :class:`~edgerec.teacher.gate.WeakTeacherError` (exit 3) when the teacher
    does not beat the required baselines, unless ``allow_weak_teacher`` (then it warns).
    ``max_users`` > 0 scores a seeded sample of users (a slow remote teacher on a large
    log); the baselines' ranks are taken for the same users.
    """
    suite = suite or fit_baselines(split)
    users = validation_users(split, max_users, seed)
    valid_inputs = split.valid_inputs()
    ranks = evaluate(
        scorer,
        [valid_inputs[u] for u in users],
        np.asarray(split.valid_target)[users],
        ks=(10,),
        progress=progress,
    ).ranks
    baselines = {name: r[users] for name, r in suite.valid_ranks.items()}
    result = teacher_gate(ranks, baselines, seed=seed)
    result.notes.update(
        {
            "num_users": int(len(users)),
            "protocol": "validation target, full ranking, history kept",
            "baseline_params": suite.params(),
        }
    )
    if result.passed:
        log.info("%s", result.message())
    elif allow_weak_teacher:
        log.warning("--allow-weak-teacher given, continuing: %s", result.message())
    else:
        raise WeakTeacherError(f"{result.message()} Likely cause: {LIKELY_CAUSES}.", result)
    return result, suite
