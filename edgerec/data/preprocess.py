"""From a raw interaction log to per-user sequences and a leave-one-out split.

Ordering rules (all deterministic):

* A user's events are sorted by timestamp; events with equal timestamps keep
  their order in the source file (stable sort on the file row).
* Vocabulary order (``item_order="id"``, the default): items sorted by raw id —
  numerically when every id is an integer (ties such as ``"7"``/``"007"`` by the
  string), otherwise by the string's code points. With MovieLens this makes item
  index ``i`` the raw item id ``i`` when no item is filtered out. The order does
  not depend on the row order of the file. ``item_order="first_seen"`` keeps the
  order of first appearance in the file instead.
* Users are ordered by raw id the same way.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from edgerec.data.dataset import Interactions, LeaveOneOutSplit, SequenceDataset
from edgerec.errors import InputError
from edgerec.vocab import Vocab

log = logging.getLogger(__name__)

ItemOrder = Literal["id", "first_seen"]


def build_sequences(
    interactions: Interactions,
    min_user_interactions: int = 3,
    min_item_interactions: int = 1,
    dedupe: bool = False,
    *,
    item_order: ItemOrder = "id",
    name: str = "",
) -> SequenceDataset:
    """Group a log into time-ordered per-user item sequences over a new vocabulary.

    Args:
        interactions: the raw log (rows in file order).
        min_user_interactions: drop users with fewer events. The default 3 is what
            :func:`leave_one_out` needs (one train, one validation, one test item).
        min_item_interactions: drop items with fewer events. When both minimums
            are above 1 the filter is applied iteratively until every remaining
            user and item meets it (k-core).
        dedupe: keep only the earliest event of each (user, item) pair.
        item_order: ``"id"`` (sort by raw id, see the module docstring) or
            ``"first_seen"`` (order of first appearance in the file).
        name: dataset name stored on the result.

    Returns:
        A :class:`SequenceDataset` whose ``preprocessing`` dict counts everything
        that was dropped. Everything dropped is also logged.

    Raises:
        InputError: bad arguments, or nothing left after filtering.
    """
    if min_user_interactions < 1 or min_item_interactions < 1:
        raise InputError("min_user_interactions and min_item_interactions must be at least 1")
    if item_order not in ("id", "first_seen"):
        raise InputError(f"item_order must be 'id' or 'first_seen' (got {item_order!r})")
    n = len(interactions)
    source = interactions.source or name or "interactions"
    users = np.asarray(interactions.users)
    items = np.asarray(interactions.items)
    times = np.asarray(interactions.timestamps)
    if not (users.shape == items.shape == times.shape == (n,)):
        raise InputError(f"{source}: users, items and timestamps must be 1-D of equal length")
    num_users, num_items = len(interactions.user_ids), len(interactions.item_ids)
    if n and (users.min() < 0 or users.max() >= num_users or items.min() < 0):
        raise InputError(f"{source}: user codes out of range of user_ids")
    if n and items.max() >= num_items:
        raise InputError(f"{source}: item codes out of range of item_ids")

    keep = np.ones(n, dtype=bool)
    stats: dict[str, Any] = {
        "raw_interactions": n,
        "raw_users": int(np.count_nonzero(np.bincount(users, minlength=num_users))),
        "raw_items": int(np.count_nonzero(np.bincount(items, minlength=num_items))),
        "min_user_interactions": min_user_interactions,
        "min_item_interactions": min_item_interactions,
        "dedupe": dedupe,
        "item_order": item_order,
        "duplicates_dropped": 0,
    }

    if dedupe and n:
        # Time order within each user (ties: file order), keep the first of each pair.
        order = np.lexsort((times, users))
        pair = users[order].astype(np.int64) * num_items + items[order]
        _, first = np.unique(pair, return_index=True)
        keep[:] = False
        keep[order[first]] = True
        stats["duplicates_dropped"] = int(n - first.size)
        del order, pair, first

    iterations = 0
    while True:
        user_count = np.bincount(users[keep], minlength=num_users)
        item_count = np.bincount(items[keep], minlength=num_items)
        bad = keep & (
            (user_count[users] < min_user_interactions)
            | (item_count[items] < min_item_interactions)
        )
        if not bad.any():
            break
        iterations += 1
        keep &= ~bad
    kept = int(keep.sum())
    stats["filter_iterations"] = iterations
    stats["filtered_interactions"] = n - stats["duplicates_dropped"] - kept
    stats["users_dropped"] = stats["raw_users"] - int(np.count_nonzero(user_count))
    stats["items_dropped"] = stats["raw_items"] - int(np.count_nonzero(item_count))
    log.info(
        "%s: kept %d of %d interactions; dropped %d duplicate(s) and %d by the filters "
        "(users < %d events / items < %d events, %d pass(es)): %d user(s), %d item(s) removed",
        source,
        kept,
        n,
        stats["duplicates_dropped"],
        stats["filtered_interactions"],
        min_user_interactions,
        min_item_interactions,
        iterations,
        stats["users_dropped"],
        stats["items_dropped"],
    )
    if kept == 0:
        raise InputError(
            f"{source}: no interactions left after filtering "
            f"(min_user_interactions={min_user_interactions}, "
            f"min_item_interactions={min_item_interactions}); lower the minimums"
        )

    # Vocabulary and user order.
    item_codes = np.flatnonzero(item_count)
    user_codes = np.flatnonzero(user_count)
    if item_order == "first_seen":
        item_codes = _first_seen(items[keep], item_codes)
        user_codes = _first_seen(users[keep], user_codes)
    else:
        item_codes = item_codes[natural_order([interactions.item_ids[c] for c in item_codes])]
        user_codes = user_codes[natural_order([interactions.user_ids[c] for c in user_codes])]
    vocab = Vocab([interactions.item_ids[c] for c in item_codes.tolist()])
    item_index = np.zeros(num_items, dtype=np.int32)
    item_index[item_codes] = np.arange(1, item_codes.size + 1, dtype=np.int32)
    user_rank = np.full(num_users, -1, dtype=np.int64)
    user_rank[user_codes] = np.arange(user_codes.size)

    rows = np.flatnonzero(keep)
    del keep
    ranks = user_rank[users[rows]]
    order = rows[np.lexsort((times[rows], ranks))]  # stable: equal times keep file order
    del rows, ranks
    seq_items = item_index[items[order]]
    seq_times = times[order].astype(np.int64, copy=False)
    bounds = np.cumsum(user_count[user_codes])[:-1]
    dataset = SequenceDataset(
        vocab=vocab,
        user_ids=[interactions.user_ids[c] for c in user_codes.tolist()],
        sequences=np.split(seq_items, bounds),
        timestamps=np.split(seq_times, bounds),
        name=name,
        preprocessing=stats,
    )
    stats.update(users=dataset.num_users, items=dataset.num_items, interactions=kept)
    return dataset


def natural_order(ids: list[str]) -> np.ndarray:
    """Permutation sorting raw ids numerically when all are integers, else as strings."""
    if not ids:
        return np.empty(0, dtype=np.int64)
    strings = np.array(ids)
    if all(s.isascii() and s.lstrip("-").isdigit() and len(s) <= 18 for s in ids):
        values = np.array([int(s) for s in ids], dtype=np.int64)
        return np.lexsort((strings, values))
    return np.argsort(strings, kind="stable")


def _first_seen(column: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``codes`` ordered by their first row in ``column``."""
    _, first = np.unique(column, return_index=True)  # np.unique is sorted like codes
    return codes[np.argsort(first, kind="stable")]


def leave_one_out(dataset: SequenceDataset) -> LeaveOneOutSplit:
    """Split every sequence by time: last item = test, second-last = validation.

    Raises:
        InputError: a user has fewer than 3 events (build the dataset with
            ``min_user_interactions=3``, the default, to drop such users).
    """
    train: list[np.ndarray] = []
    valid = np.empty(dataset.num_users, dtype=np.int32)
    test = np.empty(dataset.num_users, dtype=np.int32)
    for u, seq in enumerate(dataset.sequences):
        if len(seq) < 3:
            raise InputError(
                f"{dataset.name or 'dataset'}: user {dataset.user_ids[u]!r} has {len(seq)} "
                "event(s); leave-one-out needs at least 3 per user. Build the dataset with "
                "min_user_interactions=3 to drop such users"
            )
        train.append(np.asarray(seq[:-2], dtype=np.int32))
        valid[u] = seq[-2]
        test[u] = seq[-1]
    return LeaveOneOutSplit(dataset=dataset, train=train, valid_target=valid, test_target=test)


def dataset_stats(dataset: SequenceDataset) -> dict[str, Any]:
    """Counts and sequence-length statistics of a dataset, JSON-able."""
    lengths = np.fromiter((len(s) for s in dataset.sequences), dtype=np.int64)
    n_users, n_items = dataset.num_users, dataset.num_items
    total = int(lengths.sum())
    stats: dict[str, Any] = {
        "name": dataset.name,
        "users": n_users,
        "items": n_items,
        "interactions": total,
        "density": total / (n_users * n_items) if n_users and n_items else 0.0,
    }
    if lengths.size:
        stats["length"] = {
            "min": int(lengths.min()),
            "p25": float(np.percentile(lengths, 25)),
            "median": float(np.median(lengths)),
            "mean": float(lengths.mean()),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        }
        per_item = np.bincount(np.concatenate(dataset.sequences), minlength=n_items + 1)[1:]
        stats["item_frequency"] = {
            "min": int(per_item.min()),
            "median": float(np.median(per_item)),
            "max": int(per_item.max()),
        }
    if dataset.preprocessing:
        stats["preprocessing"] = dict(dataset.preprocessing)
    return stats
