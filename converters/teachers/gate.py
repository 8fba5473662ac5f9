"""The teacher gate for teachers edgerec did not train: beat most-popular before distilling.

Scores the validation split (the user's second-last item, full ranking over the whole
catalog, the project's protocol) with the teacher and with the most-popular baseline.
A teacher that does not beat it is refused with exit 3, the measured numbers and the
likely causes: for a teacher that was fine in its own code the usual culprits are the
descriptor (padding side, ``[MASK]`` setting, output position, vocabulary order), which
all turn a good model into a weak one rather than a crashing one.

This is the seam for the shared teacher gate of issue #11 (``edgerec/teacher/gate.py``,
which adds the transition baseline): :func:`baseline_metrics` is the one place the
baselines are computed, and :func:`check_teacher` the one place the rule is applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerec.baselines import MostPopular
from edgerec.converters.passes.validate import Check, GateFailed
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.metrics import evaluate, protocol_line

from .base import ContractScorer

log = logging.getLogger(__name__)

LIKELY_CAUSES = (
    "padding side (input.padding), [MASK] setting (input.mask), output.position or the "
    "vocabulary order look wrong — or the teacher is undertrained"
)


@dataclass(frozen=True)
class TeacherGateResult:
    """The teacher's and the baselines' validation metrics (the manifest records them)."""

    teacher: dict[str, float]
    baselines: dict[str, dict[str, float]]
    protocol: str
    num_users: int
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "baselines": self.baselines,
            "protocol": self.protocol,
            "num_users": self.num_users,
            "passed": self.passed,
        }


def _validation_users(split: LeaveOneOutSplit, max_users: int, seed: int) -> np.ndarray:
    users = np.arange(len(split.train))
    users = users[[len(split.train[u]) > 0 for u in users]]
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def baseline_metrics(
    split: LeaveOneOutSplit,
    histories: list[np.ndarray],
    targets: np.ndarray,
    mode: str,
    window: int | None,
) -> dict[str, dict[str, float]]:
    """Validation metrics of the baselines a teacher must beat."""
    pop = MostPopular(split.vocab.num_items).fit(split.train)
    result = evaluate(
        pop.scores,
        histories,
        targets,
        ks=(10,),
        exclude_mode=mode,
        window=window,
        num_items=split.vocab.num_items,
    )
    return {"most_popular": result.metrics}


def check_teacher(
    scorer: ContractScorer,
    split: LeaveOneOutSplit,
    exclude_mode: str = "history",
    max_users: int = 2000,
    seed: int = 0,
    progress: bool = False,
    allow_weak_teacher: bool = False,
) -> TeacherGateResult:
    """Measure the teacher on the validation split; raise :class:`GateFailed` when it loses
    (unless ``allow_weak_teacher``: then warn, and the manifest records the override)."""
    users = _validation_users(split, max_users, seed)
    valid_inputs = split.valid_inputs()
    histories = [valid_inputs[u] for u in users]
    targets = np.asarray(split.valid_target)[users]
    mode = exclude_mode
    window = scorer.contract.input.history_len if mode == "input" else None
    n = split.vocab.num_items
    teacher = evaluate(
        scorer,
        histories,
        targets,
        ks=(10,),
        exclude_mode=mode,
        window=window,
        num_items=n,
        progress=progress,
    ).metrics
    baselines = baseline_metrics(split, histories, targets, mode, window)
    best_name, best = max(baselines.items(), key=lambda kv: kv[1]["NDCG@10"])
    passed = teacher["NDCG@10"] > best["NDCG@10"]
    result = TeacherGateResult(
        teacher, baselines, protocol_line(mode, num_items=n, window=window), len(users), passed
    )
    line = (
        f"teacher NDCG@10 {teacher['NDCG@10']:.4f} HR@10 {teacher['HR@10']:.4f} vs "
        f"{best_name.replace('_', '-')} NDCG@10 {best['NDCG@10']:.4f} HR@10 {best['HR@10']:.4f} "
        f"on {len(users)} validation users ({result.protocol})"
    )
    if not passed and allow_weak_teacher:
        log.warning("--allow-weak-teacher given, continuing: the teacher loses: %s", line)
    elif not passed:
        check = Check(
            "teacher",
            f"beats {best_name}",
            False,
            teacher["NDCG@10"],
            f"> {best['NDCG@10']:.4f}",
            detail=line,
        )
        raise GateFailed(
            f"the teacher does not beat {best_name.replace('_', '-')}: {line}. Likely cause: "
            f"{LIKELY_CAUSES}",
            [check],
        )
    log.info("teacher gate passed: %s", line)
    return result
