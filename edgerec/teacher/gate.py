"""The teacher gate: a teacher must beat simple baselines before it is distilled.

A teacher whose validation NDCG@10 is not above most-popular and the item-transition
baseline by a margin whose paired-bootstrap interval excludes 0 (per user, on the
same validation targets) is not worth shipping: the student would learn to count.
``edgerec train`` ends with exit 3 on such a teacher and ``edgerec convert`` refuses
it (exit 3) unless ``--allow-weak-teacher`` is given, which the bundle records.

:func:`teacher_gate` takes per-user validation ranks (or a score matrix and the
targets), so any teacher — Keras, SavedModel, ONNX, remote — can be gated the same
way; :func:`gate_scorer` does the scoring for a ``score_fn`` over histories.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.errors import EdgerecError, InputError
from edgerec.metrics import (
    BootstrapResult,
    evaluate,
    paired_bootstrap,
    per_user_metrics,
    target_ranks,
)
from edgerec.teacher.baselines import MOST_POPULAR, TRANSITION, BaselineSuite, fit_baselines

log = logging.getLogger(__name__)

#: baselines a teacher must beat
REQUIRED = (MOST_POPULAR, TRANSITION)

ADVICE = (
    "what to try: a longer training budget (train.max_steps, or --steps), a smaller "
    'model or more dropout on a small log, the causal teacher (model.kind = "sasrec" '
    "in --config), or check that the log's order carries sequential signal "
    "(timestamps, one row per event); --allow-weak-teacher keeps this teacher anyway "
    "and the bundle records that"
)


class WeakTeacherError(EdgerecError):
    """The teacher does not beat the required baselines on validation (exit 3)."""

    exit_code = 3

    def __init__(self, message: str, result: GateResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`teacher_gate`.

    Attributes:
        passed: the teacher beat every required baseline.
        metric: the per-user metric compared, e.g. ``NDCG@10``.
        teacher: the teacher's mean validation metric.
        comparisons: per baseline, the paired bootstrap of teacher − baseline.
        required: the baselines that had to be beaten.
        failed: the required baselines that were not beaten.
        min_margin: the lower CI bound had to exceed this.
    """

    passed: bool
    metric: str
    teacher: float
    comparisons: dict[str, BootstrapResult]
    required: tuple[str, ...]
    failed: tuple[str, ...]
    min_margin: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        """One paragraph: what was compared and, on failure, what to try."""
        parts = []
        for name, b in self.comparisons.items():
            parts.append(
                f"{name} {b.mean_b:.4f} (teacher − it {b.diff:+.4f}, "
                f"{b.confidence:.0%} CI [{b.low:+.4f}, {b.high:+.4f}])"
            )
        head = f"validation {self.metric}: teacher {self.teacher:.4f} vs " + "; ".join(parts)
        if self.passed:
            return f"teacher gate passed: {head}"
        return (
            f"teacher gate failed: the teacher does not beat {', '.join(self.failed)} on "
            f"validation by a margin whose CI excludes 0. {head}. {ADVICE}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "metric": self.metric,
            "teacher": self.teacher,
            "required": list(self.required),
            "failed": list(self.failed),
            "min_margin": self.min_margin,
            "comparisons": {k: v.to_json() for k, v in self.comparisons.items()},
            **self.notes,
        }


def _as_ranks(value: np.ndarray, targets: np.ndarray | None, what: str) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim == 2:
        if targets is None:
            raise InputError(f"{what}: a score matrix needs the validation targets")
        return target_ranks(value, np.asarray(targets))
    if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
        raise InputError(
            f"{what}: expected per-user integer ranks (U,) or scores (U, n), "
            f"got {value.dtype} {value.shape}"
        )
    return value


def teacher_gate(
    teacher: np.ndarray,
    baselines: Mapping[str, np.ndarray] | BaselineSuite,
    *,
    targets: np.ndarray | None = None,
    required: Sequence[str] = REQUIRED,
    k: int = 10,
    min_margin: float = 0.0,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> GateResult:
    """Whether ``teacher`` beats every ``required`` baseline on validation.

    Args:
        teacher: per-user 0-based validation ranks ``(U,)`` (from
            :func:`edgerec.metrics.target_ranks`), or validation scores ``(U, n)``
            with ``targets``.
        baselines: per-user validation ranks per baseline name, for the same users
            in the same order (or a :class:`BaselineSuite`); every name is compared
            and reported, ``required`` ones must be beaten.
        targets: the validation targets, only when ``teacher`` is a score matrix.
        k: the cutoff of the compared metric, NDCG@k.
        min_margin: the lower bound of the paired-bootstrap interval of teacher −
            baseline must be above this (0: the interval excludes 0).
    """
    ranks_by_name = baselines.valid_ranks if isinstance(baselines, BaselineSuite) else baselines
    missing = [name for name in required if name not in ranks_by_name]
    if missing:
        raise InputError(
            f"teacher gate: no ranks for required baseline(s) {', '.join(missing)} "
            f"(have {', '.join(ranks_by_name) or 'none'})"
        )
    teacher_ranks = _as_ranks(teacher, targets, "teacher")
    metric = f"NDCG@{k}"
    t = per_user_metrics(teacher_ranks, k)[metric]
    comparisons: dict[str, BootstrapResult] = {}
    for name, ranks in ranks_by_name.items():
        ranks = _as_ranks(ranks, None, f"baseline {name!r}")
        if ranks.shape != teacher_ranks.shape:
            raise InputError(
                f"teacher gate: baseline {name!r} has {ranks.shape[0]} users, the teacher "
                f"{teacher_ranks.shape[0]}; rank the same validation users"
            )
        b = per_user_metrics(ranks, k)[metric]
        comparisons[name] = paired_bootstrap(
            t, b, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
    failed = tuple(name for name in required if not comparisons[name].low > min_margin)
    return GateResult(
        passed=not failed,
        metric=metric,
        teacher=float(t.mean()),
        comparisons=comparisons,
        required=tuple(required),
        failed=failed,
        min_margin=float(min_margin),
    )


def gate_scorer(
    score_fn: Callable[[list[np.ndarray]], np.ndarray],
    split: LeaveOneOutSplit,
    suite: BaselineSuite | None = None,
    **options: Any,
) -> tuple[GateResult, BaselineSuite]:
    """Score ``split``'s validation histories with ``score_fn`` and gate the teacher.

    ``score_fn`` maps a batch of histories (item indices, oldest first) to ``(B, n)``
    scores, e.g. a :class:`~edgerec.teacher.scoring.KerasScorer` or any other
    teacher's adapter. Baselines are fitted unless ``suite`` is given. ``options``
    go to :func:`teacher_gate`.
    """
    suite = suite or fit_baselines(split)
    ranks = evaluate(score_fn, split.valid_inputs(), np.asarray(split.valid_target), ks=(10,)).ranks
    return teacher_gate(ranks, suite, **options), suite


def enforce(result: GateResult, allow_weak_teacher: bool, who: str) -> None:
    """Raise :class:`WeakTeacherError` for a failed gate unless it is allowed (then warn)."""
    if result.passed:
        log.info("%s", result.message())
        return
    if allow_weak_teacher:
        log.warning("%s: --allow-weak-teacher given, continuing: %s", who, result.message())
        return
    raise WeakTeacherError(result.message(), result)
