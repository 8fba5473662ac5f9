"""Tests for edgerec.baselines.MostPopular."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.baselines import MostPopular
from edgerec.data.dataset import LeaveOneOutSplit, SequenceDataset
from edgerec.errors import EdgerecError, InputError
from edgerec.metrics import evaluate, target_ranks
from edgerec.vocab import Vocab


def _toy_split() -> LeaveOneOutSplit:
    # 5 items. Training counts: item 3 x4, item 1 x2, item 2 x2, item 5 x1, item 4 x0.
    vocab = Vocab(["a", "b", "c", "d", "e"])
    train = [
        np.array([3, 1, 3], dtype=np.int32),
        np.array([2, 3], dtype=np.int32),
        np.array([1, 2, 3, 5], dtype=np.int32),
    ]
    valid = np.array([2, 3, 4], dtype=np.int32)
    test = np.array([3, 1, 2], dtype=np.int32)
    seqs = [
        np.append(t, [v, s]).astype(np.int32) for t, v, s in zip(train, valid, test, strict=True)
    ]
    ds = SequenceDataset(
        vocab=vocab,
        user_ids=["u0", "u1", "u2"],
        sequences=seqs,
        timestamps=[np.arange(len(s), dtype=np.int64) for s in seqs],
        name="toy",
    )
    return LeaveOneOutSplit(dataset=ds, train=train, valid_target=valid, test_target=test)


def test_counts_and_order_on_toy_dataset() -> None:
    split = _toy_split()
    pop = MostPopular(split.vocab.num_items).fit(split.train)
    assert pop.counts.tolist() == [2, 2, 4, 0, 1]
    # Ties (items 1 and 2, count 2) are broken towards the lower index.
    assert pop.top_k(5).tolist() == [3, 1, 2, 5, 4]
    assert pop.top_k(2).tolist() == [3, 1]
    assert pop.top_k(99).tolist() == [3, 1, 2, 5, 4]
    assert pop.score_vector.tolist() == [4.0, 3.0, 5.0, 1.0, 2.0]


def test_scores_same_row_for_every_user() -> None:
    split = _toy_split()
    pop = MostPopular(5).fit(split.train)
    scores = pop.scores(split.test_inputs())
    assert scores.shape == (3, 5) and scores.dtype == np.float32
    assert (scores == scores[0]).all()
    assert len(np.unique(scores[0])) == 5  # strict order, no ties left
    np.testing.assert_array_equal(pop(split.test_inputs()), scores)
    # Rows are independent copies: editing one leaves the model untouched.
    scores[0, 0] = -1.0
    assert pop.scores([np.array([1])])[0, 0] == 4.0


def test_popular_ranks_and_evaluate() -> None:
    split = _toy_split()
    pop = MostPopular(5).fit(split.train)
    ranks = target_ranks(pop.scores(split.test_inputs()), split.test_target)
    assert ranks.tolist() == [0, 1, 2]  # items 3, 1, 2 in the order 3 > 1 > 2 > 5 > 4
    res = evaluate(pop.scores, split.test_inputs(), split.test_target, ks=(1, 2))
    assert res.ranks.tolist() == [0, 1, 2]
    assert res.metrics["HR@1"] == pytest.approx(1 / 3)
    assert res.metrics["HR@2"] == pytest.approx(2 / 3)
    # Excluding history: u1's history (2, 3, 3) removes item 3 above target 1.
    res = evaluate(pop.scores, split.test_inputs(), split.test_target, exclude_mode="history")
    assert res.ranks.tolist() == [0, 0, 0]


def test_tie_break_survives_large_counts() -> None:
    n = 1000
    big = np.full(200_000, 7, dtype=np.int64)
    seqs = [big, np.arange(1, n + 1), np.arange(1, n + 1)]  # item 7 huge, all others tie
    pop = MostPopular(n).fit(seqs)
    s = pop.score_vector
    assert len(np.unique(s)) == n
    assert pop.top_k(3).tolist() == [7, 1, 2]


def test_pad_is_ignored_and_bad_input_rejected() -> None:
    pop = MostPopular(3).fit([np.array([0, 0, 2, 2, 1])])
    assert pop.counts.tolist() == [1, 2, 0]
    with pytest.raises(InputError, match="not an item index"):
        MostPopular(3).fit([np.array([4])])
    with pytest.raises(InputError):
        MostPopular(0)
    with pytest.raises(EdgerecError, match="fit"):
        MostPopular(3).scores([np.array([1])])


def test_fit_on_empty_data_orders_by_index() -> None:
    pop = MostPopular(4).fit([])
    assert pop.counts.tolist() == [0, 0, 0, 0]
    assert pop.top_k(4).tolist() == [1, 2, 3, 4]
