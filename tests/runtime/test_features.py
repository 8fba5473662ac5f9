"""FeatureExtractor: ordering, de-dup, unknown ids, truncation == FeatureSpec.encode."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.runtime.features import Dedupe, FeatureExtractor
from edgerec.runtime.history import Event
from edgerec.vocab import Vocab

N_ITEMS = 30
VOCAB = Vocab([f"i{k}" for k in range(N_ITEMS)])  # "iK" has index K + 1
SPEC = FeatureSpec(max_len=6, num_items=N_ITEMS)  # history_len 5


def idx(*ids: str) -> list[int]:
    return [VOCAB.index(i) for i in ids]


def events(*ids: str, times: list[float] | None = None) -> list[Event]:
    times = times if times is not None else [float(t) for t in range(len(ids))]
    return [Event("u", i, t) for i, t in zip(ids, times, strict=True)]


@pytest.fixture
def fx() -> FeatureExtractor:
    return FeatureExtractor(VOCAB, SPEC)


@pytest.mark.parametrize("length", [0, 1, 3, 5, 6, 17])
def test_row_equals_feature_spec_encode(length: int) -> None:
    rng = np.random.default_rng(length)
    ids = [f"i{k}" for k in rng.integers(0, N_ITEMS, length)]
    fx = FeatureExtractor(VOCAB, SPEC)
    expected = SPEC.encode(VOCAB.encode(ids))
    row, stats = fx.extract(ids)
    assert row.dtype == np.int32 and row.shape == (SPEC.max_len,)
    np.testing.assert_array_equal(row, expected)
    np.testing.assert_array_equal(fx.extract(events(*ids))[0], expected)
    assert stats.num_events == length
    assert stats.num_used == min(length, SPEC.history_len)
    assert stats.num_truncated == max(0, length - SPEC.history_len)
    assert stats.empty == (length == 0)


def test_extract_batch_equals_encode_batch() -> None:
    rng = np.random.default_rng(0)
    histories = [[f"i{k}" for k in rng.integers(0, N_ITEMS, n)] for n in (0, 2, 5, 9)]
    fx = FeatureExtractor(VOCAB, SPEC)
    batch, stats = fx.extract_batch(histories)
    expected = SPEC.encode_batch([VOCAB.encode(h) for h in histories])
    np.testing.assert_array_equal(batch, expected)
    for h, row, st in zip(histories, batch, stats, strict=True):
        single_row, single_stats = fx.extract(h)
        np.testing.assert_array_equal(row, single_row)
        assert st == single_stats
    empty_batch, no_stats = fx.extract_batch([])
    assert empty_batch.shape == (0, SPEC.max_len) and no_stats == []


def test_events_are_ordered_by_time_stably(fx: FeatureExtractor) -> None:
    evs = events("i3", "i1", "i2", "i4", times=[30.0, 10.0, 10.0, 5.0])
    row, _ = fx.extract(evs)
    # i4 (5) < i1 (10) = i2 (10, given after i1) < i3 (30)
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i4", "i1", "i2", "i3"))))


def test_history_store_events_work_directly(fx: FeatureExtractor, tmp_path) -> None:
    from edgerec.runtime.history import HistoryStore

    with HistoryStore(tmp_path / "h.db") as store:
        store.record_many([("u", "i5", 2.0), ("u", "i7", 1.0), ("u", "zzz", 3.0)])
        row, stats = fx.extract(store.history("u"))
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i7", "i5"))))
    assert stats.num_unknown == 1


def test_unknown_ids_are_counted_skipped_and_logged(
    fx: FeatureExtractor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="edgerec.runtime.features"):
        row, stats = fx.extract(["i1", "nope", "i2", "", "i99"])
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i1", "i2"))))
    assert (stats.num_events, stats.num_unknown, stats.num_used) == (5, 3, 2)
    assert not stats.empty
    assert "3 item ids not in the vocabulary" in caplog.text and "nope" in caplog.text


@pytest.mark.parametrize("history", [[], ["x", "y"], events("x")])
def test_empty_or_all_unknown_is_flagged(fx: FeatureExtractor, history: list) -> None:
    row, stats = fx.extract(history)
    assert stats.empty
    assert stats.num_used == 0
    assert stats.seen.shape == (0,) and stats.seen.dtype == np.int32
    np.testing.assert_array_equal(row, SPEC.encode(np.zeros(0, np.int32)))


@pytest.mark.parametrize(
    "bad",
    [
        ["i1", None],
        [None],
        ["i1", 3],
        [b"i1"],
        [["i1"]],
        "i1",
        [Event("u", None, 1.0)],  # type: ignore[arg-type]
        [Event("u", "i1", float("nan"))],
        [Event("u", "i1", float("inf"))],
        [Event("u", "i1", None)],  # type: ignore[arg-type]
        [Event("u", "i1", 1.0), object()],
        [Event("u", "i1", 1.0), "i2"],
    ],
)
def test_bad_histories_raise_input_error(fx: FeatureExtractor, bad: object) -> None:
    with pytest.raises(InputError):
        fx.extract(bad)  # type: ignore[arg-type]


def test_dedupe_consecutive() -> None:
    fx = FeatureExtractor(VOCAB, SPEC, dedupe="consecutive")
    row, stats = fx.extract(["i1", "i1", "i2", "i1", "i1", "i1"])
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i1", "i2", "i1"))))
    assert stats.num_duplicates == 3
    # unknown ids are dropped before de-dup: i1 X i1 is a consecutive repeat
    row, stats = fx.extract(["i1", "unknown", "i1"])
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i1"))))
    assert (stats.num_unknown, stats.num_duplicates) == (1, 1)


def test_dedupe_all_keep_last() -> None:
    fx = FeatureExtractor(VOCAB, SPEC, dedupe=Dedupe.ALL_KEEP_LAST)
    row, stats = fx.extract(["i1", "i2", "i1", "i3", "i2", "i2"])
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i1", "i3", "i2"))))
    assert stats.num_duplicates == 3
    assert fx.dedupe is Dedupe.ALL_KEEP_LAST


def test_dedupe_none_keeps_repeats() -> None:
    fx = FeatureExtractor(VOCAB, SPEC, dedupe="none")
    row, stats = fx.extract(["i1", "i1", "i1"])
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i1", "i1", "i1"))))
    assert stats.num_duplicates == 0


def test_dedupe_happens_before_truncation() -> None:
    fx = FeatureExtractor(VOCAB, SPEC, dedupe="consecutive")
    ids = ["i1", "i2", "i3", "i4", "i5", "i6", "i6", "i6", "i6"]
    row, stats = fx.extract(ids)
    np.testing.assert_array_equal(row, SPEC.encode(np.array(idx("i2", "i3", "i4", "i5", "i6"))))
    assert (stats.num_duplicates, stats.num_truncated, stats.num_used) == (3, 1, 5)


def test_seen_covers_the_whole_history_for_exclusion(fx: FeatureExtractor) -> None:
    ids = ["i9", "i1", "i9", "i2", "i3", "i4", "i5", "i6", "bogus"]
    row, stats = fx.extract(ids)
    assert stats.num_truncated == 3
    # i9 was truncated out of the row but is still "seen"
    np.testing.assert_array_equal(stats.seen, np.array(sorted(set(idx(*ids[:-1]))), np.int32))
    assert stats.seen.dtype == np.int32
    assert stats.to_json()["num_unknown"] == 1
    assert "num_truncated=3" in repr(stats)
    # known: the same items in time order with repeats (what ranking excludes)
    np.testing.assert_array_equal(stats.known, idx(*ids[:-1]))
    assert stats.known.dtype == np.int32


def test_generators_and_arrays_are_accepted(fx: FeatureExtractor) -> None:
    ids = ["i1", "i2", "i3"]
    expected = fx.extract(ids)[0]
    np.testing.assert_array_equal(fx.extract(i for i in ids)[0], expected)
    np.testing.assert_array_equal(fx.extract(tuple(ids))[0], expected)
    np.testing.assert_array_equal(fx.extract(np.array(ids))[0], expected)


def test_returned_rows_are_independent(fx: FeatureExtractor) -> None:
    a, _ = fx.extract(["i1"])
    a[:] = 7
    b, _ = fx.extract(["i2"])
    np.testing.assert_array_equal(b, SPEC.encode(np.array(idx("i2"))))


def test_constructor_validation() -> None:
    with pytest.raises(InputError, match="dedupe"):
        FeatureExtractor(VOCAB, SPEC, dedupe="sometimes")
    with pytest.raises(InputError, match="num_items"):
        FeatureExtractor(VOCAB, FeatureSpec(max_len=6, num_items=N_ITEMS + 1))
    with pytest.raises(InputError):
        FeatureExtractor(["i1"], SPEC)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        FeatureExtractor(VOCAB, {"max_len": 6})  # type: ignore[arg-type]
    assert "consecutive" in repr(FeatureExtractor(VOCAB, SPEC, "consecutive"))
