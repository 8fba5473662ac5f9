"""Small sequential datasets generated in the test session for teacher tests."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.data.dataset import LeaveOneOutSplit, SequenceDataset
from edgerec.vocab import Vocab


def make_sequential_split(
    num_users: int = 300, num_items: int = 60, length: int = 20, seed: int = 0
) -> LeaveOneOutSplit:
    """Users walk the catalog mostly in steps of +1 (mod n), sometimes jumping.

    A sequential model learns the walk; popularity cannot (every item is about
    equally popular).
    """
    rng = np.random.default_rng(seed)
    vocab = Vocab([f"i{k}" for k in range(num_items)])
    sequences = []
    for _ in range(num_users):
        pos = int(rng.integers(num_items))
        seq = []
        for _ in range(length):
            seq.append(pos + 1)
            pos = int(rng.integers(num_items)) if rng.random() < 0.1 else (pos + 1) % num_items
        sequences.append(np.array(seq, np.int32))
    users = [f"u{k}" for k in range(num_users)]
    ds = SequenceDataset(vocab, users, sequences, [np.arange(length)] * num_users, "walk")
    return LeaveOneOutSplit(
        ds,
        [s[:-2] for s in sequences],
        np.array([s[-2] for s in sequences], np.int32),
        np.array([s[-1] for s in sequences], np.int32),
    )


@pytest.fixture(scope="session")
def walk_split() -> LeaveOneOutSplit:
    return make_sequential_split()
