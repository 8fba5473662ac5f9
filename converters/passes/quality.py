"""Quality pass: the default artifact's NDCG@10 retention against the teacher.

Both Keras models (teacher and student) are scored on the same test-split users
with full ranking; the default artifact's per-user NDCG@10 (from the validate
pass) is compared with the teacher's by a paired bootstrap, and the gate is the
ratio of the means against ``min_ratio``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerec.converters.passes.validate import ArtifactReport, Check
from edgerec.features import FeatureSpec
from edgerec.metrics import paired_bootstrap, protocol_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityOptions:
    """The retention gate and the evaluation protocol it is stated in."""

    min_ratio: float
    bootstrap_resamples: int
    seed: int
    exclude_mode: str  # "none" | "input" | "history"
    num_items: int
    window: int  # history length (the exclusion window of mode "input")


@dataclass(frozen=True)
class QualityInput:
    """The validate pass's reports and the Keras models' test-split metrics."""

    reports: list[ArtifactReport]
    default_artifact: str | None
    teacher_metrics: dict[str, float]
    teacher_ndcg: np.ndarray  # per-user NDCG@10 of the teacher
    student_metrics: dict[str, float]


def keras_quality(
    model: Any, spec: FeatureSpec, histories: list[np.ndarray], targets: np.ndarray, mode: str
) -> tuple[dict[str, float], np.ndarray]:
    """Test-split metrics and per-user NDCG@10 of a Keras model (teacher or student)."""
    from edgerec.metrics import evaluate
    from edgerec.teacher.scoring import KerasScorer

    scorer = KerasScorer(model, spec)
    result = evaluate(
        scorer,
        histories,
        targets,
        ks=(10,),
        exclude_mode=mode,
        window=spec.history_len if mode == "input" else None,
        num_items=spec.num_items,
    )
    return result.metrics, result.per_user(10)["NDCG@10"]


def run(data: QualityInput, options: QualityOptions) -> tuple[dict[str, Any], Check | None]:
    """The manifest's ``quality`` section and the retention check."""
    mode = options.exclude_mode
    default_name = data.default_artifact
    quality: dict[str, Any] = {
        "protocol": protocol_line(
            mode, num_items=options.num_items, window=options.window if mode == "input" else None
        ),
        "num_users": int(len(data.teacher_ndcg)),
        "teacher": data.teacher_metrics,
        "student_keras": data.student_metrics,
        "artifact": default_name,
        "min_ratio": options.min_ratio,
    }
    report = next((r for r in data.reports if r.name == default_name), None)
    if report is None or report.per_user_ndcg is None:
        quality["passed"] = False
        check = Check(
            "quality",
            "retention",
            False,
            detail="the default artifact produced no test-split metrics",
        )
        log.warning("%s", check.line())
        return quality, check
    boot = paired_bootstrap(
        report.per_user_ndcg,
        data.teacher_ndcg,
        n_resamples=options.bootstrap_resamples,
        seed=options.seed,
    )
    ratio = boot.ratio
    passed = bool(np.isfinite(ratio) and ratio >= options.min_ratio)
    quality.update(
        {
            "default": {k: report.metrics[k] for k in ("NDCG@10", "HR@10", "MRR@10")},
            "ratio": ratio,
            "bootstrap": boot.to_json(),
            "passed": passed,
        }
    )
    check = Check(
        f"quality/{default_name}",
        "NDCG@10 retention vs teacher",
        passed,
        ratio,
        f">= {options.min_ratio:g}",
        detail=f"student−teacher {boot.diff:+.4f}, 95% CI [{boot.low:+.4f}, {boot.high:+.4f}] "
        f"over {boot.n} users",
    )
    log.log(logging.INFO if passed else logging.WARNING, "%s", check.line())
    return quality, check
