"""Sequences, filters, vocabulary order and the leave-one-out split."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgerec.data.dataset import Interactions
from edgerec.data.preprocess import (
    build_sequences,
    dataset_stats,
    leave_one_out,
    natural_order,
)
from edgerec.errors import InputError
from edgerec.vocab import PAD_ID


def make(rows: list[tuple[str, str, int]]) -> Interactions:
    """Interactions from (user, item, time) rows in file order."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    u = [users.setdefault(r[0], len(users)) for r in rows]
    i = [items.setdefault(r[1], len(items)) for r in rows]
    return Interactions(
        users=np.array(u, dtype=np.int32),
        items=np.array(i, dtype=np.int32),
        timestamps=np.array([r[2] for r in rows], dtype=np.int64),
        user_ids=list(users),
        item_ids=list(items),
        source="test",
    )


def raw_sequences(ds) -> dict[str, list[str]]:
    return {u: ds.vocab.decode(s) for u, s in zip(ds.user_ids, ds.sequences, strict=True)}


def test_time_order_with_stable_ties_in_file_order():
    rows = [("u", "c", 5), ("u", "a", 1), ("u", "x", 5), ("u", "b", 5), ("u", "z", 9)]
    ds = build_sequences(make(rows), min_user_interactions=1)
    assert raw_sequences(ds)["u"] == ["a", "c", "x", "b", "z"]
    assert ds.timestamps[0].tolist() == [1, 5, 5, 5, 9]
    # Same events, ties in the opposite file order -> opposite order in the sequence.
    rows2 = [("u", "z", 9), ("u", "b", 5), ("u", "x", 5), ("u", "c", 5), ("u", "a", 1)]
    assert raw_sequences(build_sequences(make(rows2), 1))["u"] == ["a", "b", "x", "c", "z"]


def test_vocab_reserved_ids_and_numeric_id_order():
    rows = [("2", "100", 1), ("10", "9", 2), ("2", "10", 3), ("10", "100", 4), ("2", "9", 5)]
    ds = build_sequences(make(rows), min_user_interactions=1)
    assert ds.vocab.item_ids == ("9", "10", "100")  # numeric, not first-seen, not string order
    assert ds.user_ids == ["2", "10"]
    assert ds.vocab.mask_id == ds.num_items + 1 == 4 and PAD_ID == 0
    all_items = np.concatenate(ds.sequences)
    assert all_items.min() >= 1 and all_items.max() <= ds.num_items
    assert all_items.dtype == np.int32
    assert ds.sequences[0].tolist() == [3, 2, 1]  # user "2": 100, 10, 9


def test_string_ids_sort_by_string_and_first_seen_option():
    rows = [("b", "beta", 1), ("a", "alpha", 2), ("b", "10", 3), ("a", "gamma", 4)]
    ds = build_sequences(make(rows), min_user_interactions=1)
    assert ds.vocab.item_ids == ("10", "alpha", "beta", "gamma")
    assert ds.user_ids == ["a", "b"]
    fs = build_sequences(make(rows), min_user_interactions=1, item_order="first_seen")
    assert fs.vocab.item_ids == ("beta", "alpha", "10", "gamma")
    assert fs.user_ids == ["b", "a"]


def test_natural_order_ties_and_negative():
    ids = ["7", "007", "-3", "12"]
    assert [ids[i] for i in natural_order(ids)] == ["-3", "007", "7", "12"]


def test_vocab_order_independent_of_row_order():
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(20)}", str(rng.integers(50)), int(t)) for t in range(400)]
    a = build_sequences(make(rows), 1)
    b = build_sequences(make(rows[::-1]), 1)
    assert a.vocab == b.vocab and a.user_ids == b.user_ids


def test_min_user_interactions_drops_and_logs(caplog):
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1), ("b", "y", 2)]
    with caplog.at_level(logging.INFO, logger="edgerec.data.preprocess"):
        ds = build_sequences(make(rows))  # default min_user_interactions=3
    assert ds.user_ids == ["a"]
    assert ds.preprocessing["users_dropped"] == 1
    assert ds.preprocessing["filtered_interactions"] == 2
    assert "1 user(s)" in caplog.text and "kept 3 of 5" in caplog.text


def _kcore_reference(rows, ku, ki):
    rows = list(rows)
    while True:
        uc: dict[str, int] = {}
        ic: dict[str, int] = {}
        for u, i, _ in rows:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        kept = [r for r in rows if uc[r[0]] >= ku and ic[r[1]] >= ki]
        if len(kept) == len(rows):
            return kept
        rows = kept


def test_iterative_kcore_cascade():
    # Items "t" and "rare" have 1 event each -> dropped; then user "c" has 1 event ->
    # dropped; then item "s" has 1 event -> dropped; then user "d" has 2 -> dropped.
    rows = [
        ("a", "p", 1), ("a", "q", 2), ("a", "r", 3),
        ("b", "p", 1), ("b", "q", 2), ("b", "r", 3),
        ("c", "s", 1), ("c", "t", 2), ("c", "rare", 3),
        ("d", "s", 4), ("d", "p", 5), ("d", "r", 6),
    ]  # fmt: skip
    ds = build_sequences(make(rows), min_user_interactions=3, min_item_interactions=2)
    assert ds.user_ids == ["a", "b"]
    assert ds.vocab.item_ids == ("p", "q", "r")
    assert ds.preprocessing["filter_iterations"] == 4
    assert ds.preprocessing["users_dropped"] == 2 and ds.preprocessing["items_dropped"] == 3
    assert ds.num_interactions == len(_kcore_reference(rows, 3, 2)) == 6
    # A single pass would have kept user "d" and item "s".
    one_pass = build_sequences(make(rows), min_user_interactions=3, min_item_interactions=1)
    assert "d" in one_pass.user_ids


def test_kcore_matches_reference_on_random_data():
    rng = np.random.default_rng(7)
    rows = [
        (f"u{rng.zipf(1.6) % 60}", f"i{rng.zipf(1.4) % 90}", int(rng.integers(1000)))
        for _ in range(3000)
    ]
    ds = build_sequences(make(rows), min_user_interactions=5, min_item_interactions=4)
    expected = _kcore_reference(rows, 5, 4)
    assert ds.num_interactions == len(expected)
    assert set(ds.user_ids) == {r[0] for r in expected}
    assert set(ds.vocab.item_ids) == {r[1] for r in expected}
    counts = np.bincount(np.concatenate(ds.sequences))
    assert counts[1:].min() >= 4 and min(len(s) for s in ds.sequences) >= 5


def test_dedupe_keeps_earliest_pair():
    rows = [("u", "x", 5), ("u", "y", 2), ("u", "x", 1), ("u", "z", 3), ("u", "y", 9)]
    ds = build_sequences(make(rows), min_user_interactions=1, dedupe=True)
    assert raw_sequences(ds)["u"] == ["x", "y", "z"]
    assert ds.timestamps[0].tolist() == [1, 2, 3]
    assert ds.preprocessing["duplicates_dropped"] == 2


def test_nothing_left_and_bad_arguments():
    with pytest.raises(InputError, match="no interactions left"):
        build_sequences(make([("u", "x", 1)]), min_user_interactions=3)
    with pytest.raises(InputError, match="at least 1"):
        build_sequences(make([("u", "x", 1)]), min_user_interactions=0)
    with pytest.raises(InputError, match="item_order"):
        build_sequences(make([("u", "x", 1)]), 1, item_order="random")  # type: ignore[arg-type]


def test_leave_one_out_split():
    rows = [(u, f"i{k}", 10 * k + ord(u)) for u in "ab" for k in range(5)] + [("c", "i0", 1)]
    rows += [("c", "i1", 2), ("c", "i2", 3)]
    ds = build_sequences(make(rows))
    split = leave_one_out(ds)
    for u, seq in enumerate(ds.sequences):
        assert split.train[u].tolist() == seq[:-2].tolist()
        assert split.valid_target[u] == seq[-2] and split.test_target[u] == seq[-1]
        assert split.test_inputs()[u].tolist() == seq[:-1].tolist()
    assert split.valid_inputs() is split.train
    assert split.train[ds.user_ids.index("c")].tolist() == [ds.vocab.index("i0")]
    assert split.valid_target.dtype == np.int32 and split.vocab is ds.vocab


def test_leave_one_out_short_user_names_user():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("shorty", "x", 1)]
    ds = build_sequences(make(rows), 1, name="t")
    with pytest.raises(InputError, match="'shorty' has 1 event"):
        leave_one_out(ds)


def test_dataset_stats():
    rows = [
        ("a", "x", 1),
        ("a", "y", 2),
        ("a", "z", 3),
        ("b", "x", 1),
        ("b", "y", 2),
        ("b", "x", 3),
    ]
    stats = dataset_stats(build_sequences(make(rows), name="tiny"))
    assert stats["users"] == 2 and stats["items"] == 3 and stats["interactions"] == 6
    assert stats["length"]["min"] == 3 and stats["length"]["max"] == 3
    assert stats["item_frequency"]["max"] == 3
    assert stats["preprocessing"]["raw_interactions"] == 6
