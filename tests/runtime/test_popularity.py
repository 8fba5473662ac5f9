"""PopularityPrior: same order as MostPopular, strict loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerec.baselines import MostPopular
from edgerec.errors import InputError
from edgerec.runtime.popularity import PopularityPrior
from edgerec.runtime.ranking import TopK


def test_ranks_like_most_popular() -> None:
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 41, 15) for _ in range(30)]
    pop = MostPopular(40).fit(sequences)
    prior = PopularityPrior(pop.counts)
    np.testing.assert_array_equal(prior.scores, pop.score_vector)
    np.testing.assert_array_equal(TopK(40).query(prior.scores, 10).indices, pop.top_k(10))
    from_hist = PopularityPrior.from_histories(sequences, 40)
    np.testing.assert_array_equal(from_hist.counts, pop.counts)


def test_equal_counts_rank_lower_index_first_and_huge_counts_stay_exact() -> None:
    counts = np.array([5, 9, 5, 2**40, 2**40 + 1, 0], np.int64)
    prior = PopularityPrior(counts)
    assert TopK(6).query(prior.scores, 6).indices.tolist() == [5, 4, 2, 1, 3, 6]
    assert prior.scores.dtype == np.float32
    assert prior.num_items == 6
    assert "num_items=6" in repr(prior)


def test_outputs_are_read_only() -> None:
    prior = PopularityPrior([1, 2, 3])
    with pytest.raises(ValueError):
        prior.scores[0] = 10
    with pytest.raises(ValueError):
        prior.counts[0] = 10
    assert prior.counts.dtype == np.int64


@pytest.mark.parametrize(
    "counts",
    [[1, 2, 3], np.array([1, 2, 3], np.int32), np.array([1, 2, 3], np.uint8), [1.0, 2.0, 3.0]],
)
def test_accepts_integer_like_counts(counts) -> None:
    assert PopularityPrior(counts).counts.tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "counts",
    [[], [[1, 2]], [1, -1], [1.5, 2], [np.nan, 1], [np.inf], ["a", "b"], [True, False], 3],
)
def test_rejects_bad_counts(counts) -> None:
    with pytest.raises(InputError):
        PopularityPrior(counts)


def test_load_npy_and_json(tmp_path: Path) -> None:
    counts = np.array([3, 0, 7], np.int64)
    np.save(tmp_path / "popularity.npy", counts)
    assert PopularityPrior.load(tmp_path / "popularity.npy", num_items=3).counts.tolist() == [
        3,
        0,
        7,
    ]
    (tmp_path / "list.json").write_text(json.dumps([3, 0, 7]))
    assert PopularityPrior.load(tmp_path / "list.json").counts.tolist() == [3, 0, 7]
    (tmp_path / "obj.json").write_text(json.dumps({"counts": [3, 0, 7]}))
    assert PopularityPrior.load(tmp_path / "obj.json").counts.tolist() == [3, 0, 7]


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "p.npy", np.array([1, 2], np.int64))
    with pytest.raises(InputError, match="vocabulary has 3"):
        PopularityPrior.load(tmp_path / "p.npy", num_items=3)
    with pytest.raises(InputError, match="not found"):
        PopularityPrior.load(tmp_path / "missing.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="junk.npy"):
        PopularityPrior.load(tmp_path / "junk.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy"):  # never unpickles
        PopularityPrior.load(tmp_path / "obj.npy")
    np.save(tmp_path / "neg.npy", np.array([1, -2]))
    with pytest.raises(InputError, match="neg.npy"):
        PopularityPrior.load(tmp_path / "neg.npy")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        PopularityPrior.load(tmp_path / "bad.json")
    (tmp_path / "nokey.json").write_text(json.dumps({"count": [1]}))
    with pytest.raises(InputError, match="counts"):
        PopularityPrior.load(tmp_path / "nokey.json")
    (tmp_path / "floats.json").write_text(json.dumps([1.5, 2]))
    with pytest.raises(InputError, match="integers"):
        PopularityPrior.load(tmp_path / "floats.json")


def test_from_histories_validates_indices() -> None:
    assert PopularityPrior.from_histories([[0, 1, 1], [2]], 3).counts.tolist() == [2, 1, 0]
    with pytest.raises(InputError):
        PopularityPrior.from_histories([[4]], 3)
