"""Test-split evaluation of a teacher against most-popular and the tuned baselines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgerec.baselines import MostPopular, rows_per_batch
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.features import FeatureSpec
from edgerec.metrics import evaluate, paired_bootstrap, protocol_line

if TYPE_CHECKING:
    from edgerec.teacher.baselines import BaselineSuite

#: score-matrix elements above which the teacher is scored per batch, not all at once
_PRECOMPUTE_LIMIT = 1 << 27

#: exclusion modes reported by ``edgerec eval``, with their table labels
MODES = {
    "none": "history kept in ranking",
    "input": "input-window items excluded",
    "history": "all earlier history excluded",
}


def compare_with_popularity(
    scorer: Any,
    spec: FeatureSpec,
    split: LeaveOneOutSplit,
    ks: tuple[int, ...] = (10,),
    modes: tuple[str, ...] = tuple(MODES),
    bootstrap_resamples: int = 2000,
    seed: int = 0,
    suite: BaselineSuite | None = None,
) -> dict[str, Any]:
    """Test metrics of ``scorer`` and of popularity for every exclusion mode.

    Returns a JSON-able dict: ``{"modes": {mode: {"protocol", "teacher",
    "popularity", "bootstrap"}}, "num_users", "num_items"}``; the bootstrap is
    the paired 95% interval of teacher − popularity NDCG@10 over users. With a
    :class:`~edgerec.teacher.baselines.BaselineSuite`, every mode also has
    ``"baselines": {name: {"metrics", "bootstrap_ndcg_teacher_minus_baseline"}}``
    (models fitted on the histories before the test target, parameters chosen on
    validation) and the result a ``"baseline_params"`` entry.
    """
    inputs = split.test_inputs()
    popularity = MostPopular(spec.num_items).fit(inputs)
    out: dict[str, Any] = {"num_users": len(inputs), "num_items": spec.num_items, "modes": {}}
    # Score once and rank under every exclusion mode, unless the score matrix would be
    # large (many users x a large catalog): then score batch by batch in every mode.
    teacher_scores = scorer(inputs) if len(inputs) * spec.num_items <= _PRECOMPUTE_LIMIT else None
    for mode in modes:
        window = spec.history_len if mode == "input" else None
        kwargs = {"ks": ks, "exclude_mode": mode, "window": window, "num_items": spec.num_items}
        teacher_fn = scorer if teacher_scores is None else PrecomputedScores(teacher_scores)
        t = evaluate(teacher_fn, inputs, split.test_target, **kwargs)
        batch = rows_per_batch(spec.num_items)
        p = evaluate(popularity.scores, inputs, split.test_target, batch_size=batch, **kwargs)
        k = ks[0]
        boot = paired_bootstrap(
            t.per_user(k)[f"NDCG@{k}"],
            p.per_user(k)[f"NDCG@{k}"],
            n_resamples=bootstrap_resamples,
            seed=seed,
        )
        out["modes"][mode] = {
            "label": MODES[mode],
            "protocol": protocol_line(mode, num_items=spec.num_items, window=window),
            "teacher": t.metrics,
            "popularity": p.metrics,
            "bootstrap_ndcg_teacher_minus_popularity": boot.to_json(),
        }
        if suite is not None:
            rows = {}
            for name, score_fn in suite.test_models.items():
                if name == "most popular":  # already the "popularity" entry
                    continue
                b = evaluate(score_fn, inputs, split.test_target, batch_size=batch, **kwargs)
                rows[name] = {
                    "metrics": b.metrics,
                    "bootstrap_ndcg_teacher_minus_baseline": paired_bootstrap(
                        t.per_user(k)[f"NDCG@{k}"],
                        b.per_user(k)[f"NDCG@{k}"],
                        n_resamples=bootstrap_resamples,
                        seed=seed,
                    ).to_json(),
                }
            out["modes"][mode]["baselines"] = rows
    if suite is not None:
        out["baseline_params"] = suite.params()
    return out


def baseline_lines(mode_result: dict[str, Any], teacher_label: str = "teacher") -> list[str]:
    """One line per baseline: teacher − baseline NDCG@10 with its paired 95% CI."""
    lines = []
    for name, row in mode_result.get("baselines", {}).items():
        b = row["bootstrap_ndcg_teacher_minus_baseline"]
        lines.append(
            f"{teacher_label} - {name} NDCG@10: {b['diff']:+.4f} "
            f"(95% paired bootstrap CI {b['low']:+.4f} .. {b['high']:+.4f})"
        )
    return lines


class PrecomputedScores:
    """A ``score_fn`` for :func:`edgerec.metrics.evaluate` that replays a score
    matrix computed once, batch after batch in order."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores
        self.position = 0

    def __call__(self, batch: list[np.ndarray]) -> np.ndarray:
        out = self.scores[self.position : self.position + len(batch)]
        self.position += len(batch)
        return out
