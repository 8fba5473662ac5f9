"""In-memory forms of interaction data: raw log, per-user sequences, splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.vocab import Vocab


@dataclass
class Interactions:
    """A raw interaction log as parallel columns (one row per event).

    ``users`` and ``items`` are integer codes into ``user_ids`` / ``item_ids``
    (the raw string ids in first-seen order); ``order`` is the row's position in
    the source file, used to break timestamp ties stably.
    """

    users: np.ndarray  # int32 codes into user_ids
    items: np.ndarray  # int32 codes into item_ids
    timestamps: np.ndarray  # int64
    user_ids: list[str]
    item_ids: list[str]
    events: np.ndarray | None = None  # int16 codes into event_types, optional
    event_types: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass
class SequenceDataset:
    """Per-user, time-ordered item sequences over a vocabulary.

    ``sequences[u]`` holds item indices (``1..n``, see :mod:`edgerec.vocab`)
    of user ``user_ids[u]``, oldest first; ``timestamps[u]`` the matching times.
    ``preprocessing`` records how it was built (filters, counts of what was dropped).
    """

    vocab: Vocab
    user_ids: list[str]
    sequences: list[np.ndarray]
    timestamps: list[np.ndarray]
    name: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return self.vocab.num_items

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


@dataclass
class LeaveOneOutSplit:
    """Leave-one-out by time: last event = test, second-last = validation.

    For user ``u``: the training prefix is ``train[u]``; the validation input is
    ``train[u]`` with target ``valid_target[u]``; the test input is
    ``train[u] + [valid_target[u]]`` with target ``test_target[u]``.
    """

    dataset: SequenceDataset
    train: list[np.ndarray]
    valid_target: np.ndarray  # int32, one per user
    test_target: np.ndarray  # int32, one per user

    def valid_inputs(self) -> list[np.ndarray]:
        """Histories used to predict the validation target."""
        return self.train

    def test_inputs(self) -> list[np.ndarray]:
        """Histories used to predict the test target (train + validation item)."""
        return [
            np.append(t, v).astype(np.int32)
            for t, v in zip(self.train, self.valid_target, strict=True)
        ]

    @property
    def vocab(self) -> Vocab:
        return self.dataset.vocab
