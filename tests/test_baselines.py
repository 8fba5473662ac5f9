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


# --------------------------------------------------------------------------- sequence baselines


def _walk(num_users: int = 200, n: int = 30, length: int = 15, seed: int = 0) -> list[np.ndarray]:
    """Users step +1 through the catalog (mod n), jumping at random 10 % of the time."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_users):
        pos, seq = int(rng.integers(n)), []
        for _ in range(length):
            seq.append(pos + 1)
            pos = int(rng.integers(n)) if rng.random() < 0.1 else (pos + 1) % n
        out.append(np.array(seq, np.int32))
    return out


def test_transition_probabilities_and_recency_weights() -> None:
    from edgerec.baselines import ItemTransition

    # 1->2 twice, 1->3 once, 2->3 once.
    model = ItemTransition(4, last_k=1).fit([np.array([1, 2, 3]), np.array([1, 2]), [1, 3]])
    row = model.scores([np.array([1])])[0]
    assert row[1] == pytest.approx(2 / 3, abs=1e-6) and row[2] == pytest.approx(1 / 3, abs=1e-6)
    # Never-followed items are ordered by popularity only, far below any real score.
    assert row[0] < 1e-6 and row[3] < 1e-6 and row[0] > row[3]  # item 1 (x3) above item 4 (x0)
    two = model.with_params(last_k=2, decay=0.5).scores([np.array([1, 2])])[0]
    # last item 2 -> 3 (weight 1), previous item 1 -> {2: 2/3, 3: 1/3} (weight 0.5)
    assert two[2] == pytest.approx(1 + 0.5 / 3, abs=1e-6)
    assert two[1] == pytest.approx(0.5 * 2 / 3, abs=1e-6)


def test_knn_cosine_neighbours_and_cap() -> None:
    from edgerec.baselines import ItemKNN

    seqs = [np.array([1, 2]), np.array([1, 2]), np.array([1, 3])]
    model = ItemKNN(3, neighbours=1, window=1, last_k=1, decay=1.0).fit(seqs)
    row = model.scores([np.array([1])])[0]
    # C(1,2)=2, N(1)=3, N(2)=2 -> 2/sqrt(6); item 3 is cut by neighbours=1
    assert row[1] == pytest.approx(2 / np.sqrt(6), abs=1e-6)
    assert row[2] < 1e-6
    assert row[0] < 1e-6  # an item is never its own neighbour


def test_sequence_baselines_beat_popularity_on_a_walk() -> None:
    from edgerec.baselines import ItemKNN, ItemTransition

    seqs = _walk()
    train = [s[:-1] for s in seqs]
    target = np.array([s[-1] for s in seqs])
    pop = evaluate(MostPopular(30).fit(train).scores, train, target).metrics["NDCG@10"]
    for model in (ItemTransition(30), ItemKNN(30, window=1, last_k=1)):
        ndcg = evaluate(model.fit(train).scores, train, target).metrics["NDCG@10"]
        assert ndcg > pop + 0.3, type(model).__name__


def test_tuning_uses_the_validation_target_only() -> None:
    from edgerec.baselines import tune_on_validation

    seqs = _walk(seed=1)
    train = [s[:-2] for s in seqs]
    valid = np.array([s[-2] for s in seqs])
    grid = {"last_k": (1, 5), "decay": (0.1, 1.0)}
    tuned = tune_on_validation("item transition", 30, train, valid, grid=grid)
    assert len(tuned.searched) == 4
    assert tuned.valid_ndcg == max(score for _, score in tuned.searched)
    # One step of a +1 walk is best predicted by the last item alone.
    assert tuned.params["last_k"] == 1 or tuned.params["decay"] == 0.1
    # A user sample (max_users) searches the same grid.
    sample = tune_on_validation("item transition", 30, train, valid, grid=grid, max_users=50)
    assert len(sample.searched) == 4


def test_sequence_baselines_reject_bad_input() -> None:
    from edgerec.baselines import ItemKNN, ItemTransition, tune_on_validation

    with pytest.raises(InputError, match="decay"):
        ItemTransition(5, decay=0.0)
    with pytest.raises(InputError, match="neighbours"):
        ItemKNN(5, neighbours=0)
    with pytest.raises(InputError, match="not an item index"):
        ItemTransition(5).fit([np.array([1, 9])])
    with pytest.raises(EdgerecError, match="fit"):
        ItemTransition(5).scores([np.array([1])])
    with pytest.raises(InputError, match="unknown baseline"):
        tune_on_validation("svd", 5, [np.array([1])], np.array([2]))
    with pytest.raises(InputError, match="refit"):
        ItemKNN(5).fit([np.array([1, 2])]).with_params(window=3)


def test_knn_neighbours_change_without_a_refit() -> None:
    from edgerec.baselines import ItemKNN

    seqs = _walk(seed=2)
    wide = ItemKNN(30, neighbours=50, window=3).fit(seqs)
    narrow = ItemKNN(30, neighbours=2, window=3).fit(seqs)
    histories = seqs[:20]
    np.testing.assert_array_equal(
        wide.with_params(neighbours=2).scores(histories), narrow.scores(histories)
    )
    assert not np.array_equal(wide.scores(histories), narrow.scores(histories))
