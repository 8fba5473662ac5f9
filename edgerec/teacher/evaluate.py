"""Test-split evaluation of a teacher against the most-popular baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerec.baselines import MostPopular
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.features import FeatureSpec
from edgerec.metrics import evaluate, paired_bootstrap, protocol_line

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
) -> dict[str, Any]:
    """Test metrics of ``scorer`` and of popularity for every exclusion mode.

    Returns a JSON-able dict: ``{"modes": {mode: {"protocol", "teacher",
    "popularity", "bootstrap"}}, "num_users", "num_items"}``; the bootstrap is
    the paired 95% interval of teacher − popularity NDCG@10 over users.
    """
    inputs = split.test_inputs()
    popularity = MostPopular(spec.num_items).fit(inputs)
    out: dict[str, Any] = {"num_users": len(inputs), "num_items": spec.num_items, "modes": {}}
    teacher_scores = scorer(inputs)  # score once, rank under every exclusion mode
    for mode in modes:
        window = spec.history_len if mode == "input" else None
        kwargs = {"ks": ks, "exclude_mode": mode, "window": window, "num_items": spec.num_items}
        t = evaluate(PrecomputedScores(teacher_scores), inputs, split.test_target, **kwargs)
        p = evaluate(popularity.scores, inputs, split.test_target, **kwargs)
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
    return out


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
