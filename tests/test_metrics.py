"""Tests for edgerec.metrics: full-ranking ranks, metrics, bootstrap, evaluate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgerec.errors import InputError
from edgerec.metrics import (
    PROTOCOL,
    EvalResult,
    evaluate,
    format_table,
    metrics_from_ranks,
    paired_bootstrap,
    per_user_metrics,
    protocol_line,
    target_ranks,
)

# --------------------------------------------------------------------------- target_ranks


def test_target_at_rank_zero_gives_full_credit() -> None:
    scores = np.array([[0.1, 0.9, 0.3, 0.2]], dtype=np.float32)
    ranks = target_ranks(scores, np.array([2]))  # item 2 = column 1, the best score
    assert ranks.tolist() == [0]
    m = metrics_from_ranks(ranks, ks=(1, 10))
    assert m["HR@1"] == m["NDCG@1"] == m["MRR@1"] == 1.0
    assert m["HR@10"] == m["NDCG@10"] == m["MRR@10"] == 1.0


def test_target_at_rank_three() -> None:
    # Item 1 (column 0) scores 0.5; items 2, 3, 4 score higher, item 5 lower.
    scores = np.array([[0.5, 0.9, 0.8, 0.7, 0.1]])
    ranks = target_ranks(scores, np.array([1]))
    assert ranks.tolist() == [3]
    m = metrics_from_ranks(ranks, ks=(3, 4, 10))
    assert m["HR@3"] == 0.0 and m["NDCG@3"] == 0.0 and m["MRR@3"] == 0.0
    assert m["HR@4"] == 1.0
    assert m["NDCG@4"] == pytest.approx(1.0 / math.log2(5))
    assert m["MRR@4"] == pytest.approx(0.25)
    assert m["NDCG@10"] == pytest.approx(1.0 / math.log2(5))


def test_ties_are_broken_against_the_target() -> None:
    scores = np.array(
        [
            [0.5, 0.5, 0.5, 0.1],  # target item 1 ties with items 2, 3 -> rank 2
            [0.9, 0.5, 0.5, 0.5],  # target item 3: 1 strictly higher + 2 equal others -> rank 3
        ]
    )
    assert target_ranks(scores, np.array([1, 3])).tolist() == [2, 3]


def test_constant_scorer_gets_no_credit() -> None:
    n = 50
    scores = np.zeros((7, n), dtype=np.float32)
    targets = np.arange(1, 8)
    ranks = target_ranks(scores, targets)
    assert (ranks == n - 1).all()
    assert metrics_from_ranks(ranks, ks=(10,))["HR@10"] == 0.0


def test_k_larger_than_catalog_is_always_a_hit() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(20, 5))
    targets = rng.integers(1, 6, size=20)
    m = metrics_from_ranks(target_ranks(scores, targets), ks=(50,))
    assert m["HR@50"] == 1.0
    assert 0.0 < m["NDCG@50"] <= 1.0


def test_matches_sort_based_reference() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(40, 30)).astype(np.float64)  # many ties
    targets = rng.integers(1, 31, size=40)
    got = target_ranks(scores, targets)
    for b in range(40):
        t = targets[b] - 1
        others = np.delete(scores[b], t)
        assert got[b] == int((others >= scores[b, t]).sum())


def test_integer_scores_and_infinities() -> None:
    scores = np.array([[3, 1, 2]], dtype=np.int32)
    assert target_ranks(scores, np.array([3])).tolist() == [1]
    scores = np.array([[np.inf, -np.inf, 0.0]])
    assert target_ranks(scores, np.array([1])).tolist() == [0]
    assert target_ranks(scores, np.array([2])).tolist() == [2]


def test_nan_scores_raise() -> None:
    scores = np.array([[0.1, 0.2], [np.nan, 0.3]])
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(scores, np.array([1, 2]))


@pytest.mark.parametrize("bad_target", [0, 4, -1])
def test_target_out_of_range_raises(bad_target: int) -> None:
    with pytest.raises(InputError, match="not an item index"):
        target_ranks(np.zeros((1, 3)), np.array([bad_target]))


def test_shape_errors() -> None:
    with pytest.raises(InputError):
        target_ranks(np.zeros(3), np.array([1]))
    with pytest.raises(InputError):
        target_ranks(np.zeros((2, 3)), np.array([1]))
    with pytest.raises(InputError):
        target_ranks(np.zeros((1, 3)), np.array([1]), exclude=[np.array([1]), np.array([2])])


# --------------------------------------------------------------------------- exclusion


def test_excluded_items_above_target_raise_its_rank() -> None:
    # target item 4 (0.6); items 1, 2, 3 score higher; item 5 lower.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1]])
    targets = np.array([4])
    assert target_ranks(scores, targets).tolist() == [3]
    assert target_ranks(scores, targets, exclude=[np.array([1, 3])]).tolist() == [1]
    # Excluding an item below the target changes nothing.
    assert target_ranks(scores, targets, exclude=[np.array([5])]).tolist() == [3]
    # Duplicates and PAD_ID (0) are ignored.
    assert target_ranks(scores, targets, exclude=[np.array([0, 0, 1, 1, 1])]).tolist() == [2]


def test_excluded_ties_are_removed_too() -> None:
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    assert target_ranks(scores, np.array([1]), exclude=[np.array([2])]).tolist() == [1]


def test_exclusion_containing_the_target_keeps_it_ranked() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1]])
    ranks = target_ranks(scores, np.array([4]), exclude=[np.array([4, 1])])
    assert ranks.tolist() == [2]  # item 1 removed, target still ranked behind 2 and 3


def test_exclusion_is_per_row() -> None:
    scores = np.tile(np.array([0.9, 0.8, 0.7, 0.6]), (3, 1))
    targets = np.array([4, 4, 4])
    exclude = [np.array([1, 2, 3]), np.array([], dtype=np.int64), np.array([2])]
    assert target_ranks(scores, targets, exclude).tolist() == [0, 3, 2]


def test_exclusion_out_of_range_raises() -> None:
    with pytest.raises(InputError, match="excluded item 5"):
        target_ranks(np.zeros((1, 4)), np.array([1]), exclude=[np.array([5])])


# --------------------------------------------------------------------------- metrics


def test_metrics_from_ranks_means_and_key_order() -> None:
    ranks = np.array([0, 1, 9, 10, 100])
    m = metrics_from_ranks(ranks, ks=(10, 5))
    assert list(m) == ["HR@10", "NDCG@10", "MRR@10", "HR@5", "NDCG@5", "MRR@5"]
    assert m["HR@10"] == pytest.approx(3 / 5)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 2 + 1 / 10) / 5)
    assert m["HR@5"] == pytest.approx(2 / 5)


def test_per_user_metrics() -> None:
    pu = per_user_metrics(np.array([0, 3, 20]), 10)
    assert set(pu) == {"HR@10", "NDCG@10", "MRR@10"}
    np.testing.assert_allclose(pu["HR@10"], [1, 1, 0])
    np.testing.assert_allclose(pu["NDCG@10"], [1, 1 / math.log2(5), 0])
    np.testing.assert_allclose(pu["MRR@10"], [1, 0.25, 0])


def test_metrics_input_errors() -> None:
    with pytest.raises(InputError):
        metrics_from_ranks(np.array([], dtype=np.int64))
    with pytest.raises(InputError):
        metrics_from_ranks(np.array([1, 2]), ks=(0,))
    with pytest.raises(InputError):
        metrics_from_ranks(np.array([-1]))


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_arrays() -> None:
    a = np.random.default_rng(0).random(300)
    r = paired_bootstrap(a, a.copy(), n_resamples=500)
    assert r.diff == 0.0 and r.low == 0.0 and r.high == 0.0
    assert r.ratio == pytest.approx(1.0)
    assert r.ratio_low == pytest.approx(1.0) and r.ratio_high == pytest.approx(1.0)
    assert not r.significant


def test_bootstrap_clear_difference_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    b = (rng.random(1000) < 0.3).astype(float)
    a = np.maximum(b, (rng.random(1000) < 0.3).astype(float))  # a >= b everywhere
    r = paired_bootstrap(a, b, n_resamples=1000, confidence=0.95, seed=3)
    assert r.diff == pytest.approx(a.mean() - b.mean())
    assert 0.0 < r.low < r.diff < r.high
    assert r.significant
    assert r.relative == pytest.approx(r.diff / b.mean())
    assert r.ratio == pytest.approx(a.mean() / b.mean())
    assert 1.0 < r.ratio_low < r.ratio < r.ratio_high


def test_bootstrap_is_deterministic_with_seed() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(200), rng.random(200)
    r1 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    r2 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    r3 = paired_bootstrap(a, b, n_resamples=300, seed=8)
    assert r1 == r2
    assert (r1.low, r1.high) != (r3.low, r3.high)


def test_bootstrap_zero_baseline_and_json() -> None:
    r = paired_bootstrap(np.ones(10), np.zeros(10), n_resamples=50)
    assert math.isnan(r.ratio) and math.isnan(r.relative) and math.isnan(r.ratio_low)
    data = r.to_json()
    assert data["ratio"] is None and data["significant"] is True
    json.dumps(data)


def test_bootstrap_input_errors() -> None:
    with pytest.raises(InputError):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(InputError):
        paired_bootstrap(np.ones(3), np.array([1.0, np.nan, 1.0]))
    with pytest.raises(InputError):
        paired_bootstrap(np.ones(3), np.ones(3), confidence=1.0)
    with pytest.raises(InputError):
        paired_bootstrap(np.array([]), np.array([]))


# --------------------------------------------------------------------------- evaluate


def _oracle_scores(num_items: int, favourite: dict[int, int]):
    """Score fn: the favourite next item of the last history item scores 1, others < 0.5."""

    def score_fn(batch: list[np.ndarray]) -> np.ndarray:
        out = np.tile(np.linspace(0.5, 0.0, num_items), (len(batch), 1))
        for b, h in enumerate(batch):
            out[b, favourite[int(h[-1])] - 1] = 1.0
        return out

    return score_fn


def test_evaluate_modes_and_batching() -> None:
    n = 6
    # Base scores decrease with item index: item 1 best, item 6 worst.
    base = np.linspace(1.0, 0.0, n)

    def score_fn(batch: list[np.ndarray]) -> np.ndarray:
        return np.tile(base, (len(batch), 1))

    inputs = [np.array([1, 2, 3]), np.array([5, 1]), np.array([2])]
    targets = np.array([4, 6, 3])
    # none: target rank = index - 1.
    res = evaluate(score_fn, inputs, targets, ks=(1, 3), batch_size=2)
    assert isinstance(res, EvalResult)
    assert res.ranks.tolist() == [3, 5, 2]
    assert res.metrics["HR@3"] == pytest.approx(1 / 3)
    assert res.num_users == 3 and res.num_items == n
    assert "history items kept in ranking" in res.protocol and "N=6" in res.protocol
    # input window of 1: exclude the last item only.
    res = evaluate(score_fn, inputs, targets, exclude_mode="input", window=1, batch_size=1)
    assert res.ranks.tolist() == [2, 4, 1]
    assert "W=1" in res.protocol
    # history: exclude everything before.
    res = evaluate(score_fn, inputs, targets, exclude_mode="history")
    assert res.ranks.tolist() == [0, 3, 1]
    assert res.metrics["HR@10"] == 1.0


def test_evaluate_history_with_repeated_target() -> None:
    base = np.array([0.9, 0.8, 0.7, 0.6])
    res = evaluate(
        lambda batch: np.tile(base, (len(batch), 1)),
        [np.array([1, 3])],
        np.array([3]),
        exclude_mode="history",
    )
    assert res.ranks.tolist() == [1]  # item 1 removed, target 3 kept, item 2 above


def test_evaluate_json_and_errors() -> None:
    score_fn = _oracle_scores(5, {1: 2, 2: 3, 3: 4})
    res = evaluate(score_fn, [np.array([1]), np.array([2])], np.array([2, 5]), ks=(1,))
    assert res.ranks.tolist() == [0, 4]
    data = res.to_json(include_ranks=True)
    assert data["metrics"]["HR@1"] == 0.5 and data["ranks"] == [0, 4]
    assert "ranks" not in res.to_json()
    json.dumps(data)
    with pytest.raises(InputError, match="window"):
        evaluate(score_fn, [np.array([1])], np.array([2]), exclude_mode="input")
    with pytest.raises(InputError, match="exclude_mode"):
        evaluate(score_fn, [np.array([1])], np.array([2]), exclude_mode="all")
    with pytest.raises(InputError, match="columns"):
        evaluate(score_fn, [np.array([1])], np.array([2]), num_items=7)
    with pytest.raises(InputError, match="shape"):
        evaluate(score_fn, [np.array([1])], np.array([2, 3]))
    with pytest.raises(InputError, match="returned shape"):
        evaluate(lambda b: np.zeros((1, 5)), [np.array([1]), np.array([2])], np.array([2, 3]))


# --------------------------------------------------------------------------- protocol / table


def test_protocol_lines() -> None:
    assert protocol_line("none").startswith(PROTOCOL)
    assert "full ranking over all N items" in PROTOCOL and "no sampled negatives" in PROTOCOL
    assert "kept in ranking" in protocol_line("none")
    assert "input window (last W=50)" in protocol_line("input", window=50)
    assert "all earlier history items removed" in protocol_line("history", num_items=9)
    with pytest.raises(InputError):
        protocol_line("bogus")


def test_format_table() -> None:
    rows = [
        ("MostPopular", {"HR@10": 0.05, "NDCG@10": 0.025}),
        ("BERT4Rec-teacher", {"HR@10": 0.31234567, "NDCG@10": 0.2, "MRR@10": 0.15}),
    ]
    text = format_table(rows, protocol_line("none"))
    lines = text.splitlines()
    assert lines[0].split() == ["model", "HR@10", "NDCG@10", "MRR@10"]
    assert lines[2].split() == ["MostPopular", "0.0500", "0.0250", "-"]
    assert lines[3].split() == ["BERT4Rec-teacher", "0.3123", "0.2000", "0.1500"]
    assert lines[-1] == f"protocol: {protocol_line('none')}"
    # Columns are aligned: every data line has the same length as the header.
    assert len({len(line) for line in lines[:4]}) == 1
