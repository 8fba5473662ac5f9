"""The baselines a teacher is measured against, fitted and tuned on one split.

:func:`fit_baselines` tunes the sequence baselines of :mod:`edgerec.baselines` on the
validation target (models fitted on ``split.train``), then keeps for every baseline
its per-user validation ranks (what :mod:`edgerec.teacher.gate` compares the teacher
with) and a model refitted on everything before the test target (what ``edgerec
eval``, ``edgerec train`` and the converter's report show next to the teacher). No
TensorFlow here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.baselines import MostPopular, TunedBaseline, rows_per_batch, tune_on_validation
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.metrics import evaluate

log = logging.getLogger(__name__)

MOST_POPULAR = "most popular"
TRANSITION = "item transition"
KNN = "item kNN"
#: every baseline, in the order tables show them
BASELINES = (MOST_POPULAR, TRANSITION, KNN)


@dataclass
class BaselineSuite:
    """The baselines of one split.

    Attributes:
        valid_ranks: per baseline, the 0-based rank of each user's validation target
            (models fitted on ``split.train``, parameters chosen on validation).
        test_models: per baseline, a ``score_fn`` over histories fitted on each
            user's sequence before the test target (``split.test_inputs()``).
        tuned: the chosen hyper-parameters of the tuned baselines.
    """

    valid_ranks: dict[str, np.ndarray]
    test_models: dict[str, Callable[[Sequence[np.ndarray]], np.ndarray]]
    tuned: dict[str, TunedBaseline] = field(default_factory=dict)

    def params(self) -> dict[str, dict[str, Any]]:
        """JSON-able chosen parameters with their validation NDCG@10."""
        return {
            name: {"params": t.params, "valid_NDCG@10": t.valid_ndcg}
            for name, t in self.tuned.items()
        }


def fit_baselines(
    split: LeaveOneOutSplit,
    names: Sequence[str] = BASELINES,
    max_tune_users: int | None = 5000,
) -> BaselineSuite:
    """Tune (validation only), score validation, and refit for test every baseline."""
    n = split.vocab.num_items
    train, valid_target = split.valid_inputs(), np.asarray(split.valid_target)
    test_inputs = split.test_inputs()
    valid_ranks: dict[str, np.ndarray] = {}
    test_models: dict[str, Callable] = {}
    tuned: dict[str, TunedBaseline] = {}
    for name in names:
        if name == MOST_POPULAR:
            valid_model = MostPopular(n).fit(train)
            test_models[name] = MostPopular(n).fit(test_inputs).scores
        else:
            t = tune_on_validation(name, n, train, valid_target, max_users=max_tune_users)
            tuned[name] = t
            valid_model = t.build(n).fit(train)
            test_models[name] = t.build(n).fit(test_inputs).scores
            log.info("%s: chose %s (valid NDCG@10 %.4f)", name, t.params, t.valid_ndcg)
        valid_ranks[name] = evaluate(
            valid_model.scores, train, valid_target, batch_size=rows_per_batch(n)
        ).ranks
    return BaselineSuite(valid_ranks, test_models, tuned)
