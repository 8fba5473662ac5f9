"""TopK: agreement with a brute-force sort, tie-breaks, filters, failures."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.errors import EdgerecError, InputError
from edgerec.runtime import ranking
from edgerec.runtime.errors import NonFiniteScoresError
from edgerec.runtime.ranking import Recommendation, TopK, to_recommendations
from edgerec.vocab import Vocab


def brute_force(scores, k, candidates=None, exclude=None, include=None):
    """Reference: full sort by (score desc, index asc) over the eligible items."""
    n = scores.shape[0]
    ok = np.ones(n, bool)
    for allow in (candidates, include):
        if allow is not None:
            mask = np.zeros(n, bool)
            mask[np.asarray(allow, np.int64) - 1] = True
            ok &= mask
    if exclude is not None:
        ok[np.asarray(exclude, np.int64) - 1] = False
    items = np.flatnonzero(ok) + 1
    order = np.lexsort((items, -scores[items - 1]))[:k]
    return items[order], scores[items - 1][order]


@pytest.fixture(params=["plain", "small-thresholds"])
def paths(request, monkeypatch):
    """Run each test through the plain path and through the sampled-prefilter path."""
    if request.param == "small-thresholds":
        monkeypatch.setattr(ranking, "_PREFILTER_MIN", 8)
        monkeypatch.setattr(ranking, "_STRIDE", 2)
        monkeypatch.setattr(ranking, "_SORT_MAX", 4)
    return request.param


def test_matches_brute_force_on_random_inputs(paths) -> None:
    rng = np.random.default_rng(42)
    for trial in range(250):
        n = int(rng.integers(1, 400))
        # odd trials: few distinct values, so many ties, also at the cut-off
        scores = rng.integers(0, 4, n).astype(np.float32) if trial % 2 else rng.standard_normal(n)
        k = int(rng.integers(0, n + 3)) if trial % 3 else int(rng.integers(0, 8))
        candidates, exclude, include = (
            None if rng.random() < p else rng.integers(1, n + 1, int(rng.integers(0, n + 1)))
            for p in (0.5, 0.4, 0.6)
        )
        got = TopK(n).index(candidates).query(scores, k, exclude=exclude, include=include)
        want = brute_force(scores, k, candidates, exclude, include)
        np.testing.assert_array_equal(got.indices, want[0], err_msg=f"trial {trial}")
        np.testing.assert_array_equal(got.scores, want[1], err_msg=f"trial {trial}")
        assert got.indices.dtype == np.int64
        assert got.scores.dtype == scores.dtype


def test_large_catalog_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    n = 100_000  # far above the prefilter size
    scores = rng.standard_normal(n).astype(np.float32)
    scores[rng.integers(0, n, 50)] = scores.max()  # a pile of ties at the very top
    exclude = rng.integers(1, n + 1, 300)
    for k in (1, 10, 60, 500):
        got = TopK(n).query(scores, k, exclude=exclude)
        want = brute_force(scores, k, exclude=exclude)
        np.testing.assert_array_equal(got.indices, want[0])
    ascending = np.arange(n, dtype=np.float32)  # the prefilter's sample estimate is worst here
    np.testing.assert_array_equal(TopK(n).query(ascending, 5).indices, np.arange(n, n - 5, -1))


def test_exclusions_may_repeat_and_come_in_any_order(paths) -> None:
    rng = np.random.default_rng(7)
    scores = rng.standard_normal(300).astype(np.float32)
    exclude = np.array([250, 3, 250, 17, 3, 299, 1], np.int32)  # int32, as FeatureExtractor
    for k in (1, 5, 300):
        got = TopK(300).query(scores, k, exclude=exclude)
        want = brute_force(scores, k, exclude=exclude)
        np.testing.assert_array_equal(got.indices, want[0])
        np.testing.assert_array_equal(got.scores, want[1])
    assert len(TopK(300).query(scores, 300, exclude=exclude).indices) == 300 - 5
    batch = np.stack([scores, -scores])
    idx, _ = TopK(300).query(batch, 4, exclude=[exclude, exclude[:2]])
    np.testing.assert_array_equal(idx[1], brute_force(-scores, 4, exclude=exclude[:2])[0])


def test_ties_break_by_lower_index_even_at_the_cut(paths) -> None:
    scores = np.array([1.0, 5.0, 3.0, 5.0, 3.0, 3.0, 0.0], np.float32)
    idx, sc = TopK(7).query(scores, 4)
    np.testing.assert_array_equal(idx, [2, 4, 3, 5])
    np.testing.assert_array_equal(sc, [5.0, 5.0, 3.0, 3.0])
    flat = np.zeros(1000, np.float32)
    np.testing.assert_array_equal(TopK(1000).query(flat, 5).indices, [1, 2, 3, 4, 5])


def test_k_larger_than_candidates_returns_all(paths) -> None:
    scores = np.array([0.1, 0.4, 0.3], np.float32)
    idx, _ = TopK(3).query(scores, 10)
    np.testing.assert_array_equal(idx, [2, 3, 1])
    idx, _ = TopK(3).index([1, 3]).query(scores, 10)
    np.testing.assert_array_equal(idx, [3, 1])
    idx, _ = TopK(3).query(scores, 10, exclude=[2])
    np.testing.assert_array_equal(idx, [3, 1])
    assert TopK(3).query(scores, 0).indices.shape == (0,)
    assert TopK(3).index([]).query(scores, 5).indices.shape == (0,)
    assert TopK(3).query(scores, 5, exclude=[1, 2, 3]).indices.shape == (0,)


@pytest.mark.parametrize("k", [-1, 2.0, "3", None, True, np.float32(1)])
def test_bad_k_is_an_input_error(k) -> None:
    with pytest.raises(InputError, match="k must be"):
        TopK(3).query(np.zeros(3), k)


def test_numpy_integer_k_is_fine() -> None:
    assert TopK(3).query(np.zeros(3), np.int64(2)).indices.tolist() == [1, 2]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_candidate_scores_fail_loudly(bad: float) -> None:
    scores = np.array([0.5, 0.2, 0.1, 0.9], np.float32)
    scores[2] = bad
    with pytest.raises(NonFiniteScoresError, match=r"item indices \[3\]") as info:
        TopK(4).query(scores, 2)
    assert isinstance(info.value, EdgerecError)
    with pytest.raises(NonFiniteScoresError):  # excluding the item does not hide it
        TopK(4).query(scores, 2, exclude=[3])
    with pytest.raises(NonFiniteScoresError, match="row 1"):
        TopK(4).query(np.stack([np.zeros(4, np.float32), scores]), 2)
    # outside the candidate set / allow-list it is not looked at
    assert TopK(4).index([1, 2, 4]).query(scores, 2).indices.tolist() == [4, 1]
    assert TopK(4).query(scores, 2, include=[1, 2]).indices.tolist() == [1, 2]


def test_candidates_include_exclude_compose(paths) -> None:
    scores = np.arange(10, dtype=np.float32)  # item i scores i - 1: higher index is better
    topk = TopK(10).index([2, 4, 6, 8, 10, 10])  # duplicates ignored
    np.testing.assert_array_equal(topk.candidates, [2, 4, 6, 8, 10])
    assert topk.query(scores, 3).indices.tolist() == [10, 8, 6]
    assert topk.query(scores, 3, exclude=[10, 9, 1]).indices.tolist() == [8, 6, 4]
    assert topk.query(scores, 3, include=[1, 2, 3, 4, 10]).indices.tolist() == [10, 4, 2]
    assert topk.query(scores, 3, include={2, 4, 10}, exclude={10}).indices.tolist() == [4, 2]
    assert topk.index(None).candidates is None
    assert topk.query(scores, 2).indices.tolist() == [10, 9]


def test_batch_shared_and_per_row_filters(paths) -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((4, 50))
    topk = TopK(50)
    shared = [1, 2, 3]
    idx, sc = topk.query(scores, 5, exclude=shared)
    assert idx.shape == sc.shape == (4, 5)
    for r in range(4):
        np.testing.assert_array_equal(idx[r], brute_force(scores[r], 5, exclude=shared)[0])
    per_row = [np.array([1]), [], np.arange(1, 40), [7, 8]]
    idx, _ = topk.query(scores, 5, exclude=per_row)
    for r in range(4):
        np.testing.assert_array_equal(idx[r], brute_force(scores[r], 5, exclude=per_row[r])[0])
    # rows with fewer eligible items than the widest row are padded with 0 / -inf
    idx, sc = topk.query(scores, 20, include=[[1, 2], np.arange(1, 30), [3], [4, 5, 6]])
    assert idx.shape == (4, 20)
    assert idx[0, 2:].tolist() == [0] * 18 and np.isneginf(sc[0, 2:]).all()
    assert (idx[1] > 0).all()


def test_bad_shapes_and_indices_are_input_errors() -> None:
    topk = TopK(5)
    with pytest.raises(InputError, match="shape"):
        topk.query(np.zeros(4), 2)
    with pytest.raises(InputError, match="shape"):
        topk.query(np.zeros((2, 2, 5)), 2)
    with pytest.raises(InputError, match="numbers"):
        topk.query(np.array(["a"] * 5), 2)
    for kwargs in ({"exclude": [0]}, {"exclude": [6]}, {"include": [-1]}, {"exclude": [1.5]}):
        with pytest.raises(InputError, match="item ind"):
            topk.query(np.zeros(5), 2, **kwargs)
    with pytest.raises(InputError, match="batch of 2"):
        topk.query(np.zeros((2, 5)), 2, exclude=[[1], [2], [3]])
    with pytest.raises(InputError):
        topk.index([0, 1])
    with pytest.raises(InputError):
        topk.index([[1, 2], [3, 4]])
    with pytest.raises(InputError):
        topk.query(np.zeros(5), 2, exclude=[1, [2, 3]])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputError):
            TopK(bad)  # type: ignore[arg-type]


def test_integer_scores_are_accepted() -> None:
    idx, sc = TopK(4).query(np.array([3, 1, 4, 1]), 2)
    assert idx.tolist() == [3, 1] and sc.tolist() == [4.0, 3.0]


def test_input_scores_are_not_modified(paths) -> None:
    scores = np.random.default_rng(1).standard_normal(200)
    before = scores.copy()
    TopK(200).index(np.arange(1, 150)).query(scores, 10, exclude=np.arange(1, 100))
    np.testing.assert_array_equal(scores, before)


def test_to_recommendations_decodes_and_skips_padding() -> None:
    vocab = Vocab(["a", "b", "c"])
    idx, sc = TopK(3).query(
        np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]], np.float32), 2, include=[[2, 3], [1]]
    )
    assert to_recommendations(vocab, idx[0], sc[0]) == [
        Recommendation("b", pytest.approx(0.9)),
        Recommendation("c", 0.5),
    ]
    assert to_recommendations(vocab, idx[1], sc[1]) == [Recommendation("a", pytest.approx(0.3))]
    rec = to_recommendations(vocab, [3], [1.0])[0]
    assert (rec.item_id, rec.score) == ("c", 1.0) and isinstance(rec.score, float)
    with pytest.raises(InputError):
        to_recommendations(vocab, [1, 2], [1.0])
    with pytest.raises(InputError):
        to_recommendations(vocab, [4], [1.0])
