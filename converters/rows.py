"""Which rows the converter calibrates, checks parity and measures quality on.

Seeded and disjoint by user: calibration rows come from training sequences of
one group of users, parity rows are the test-split inputs of others, and the
quality set is the test split (optionally subsampled).
"""

from __future__ import annotations

import logging

import numpy as np

from edgerec.converters.config import ConvertConfig
from edgerec.data.dataset import LeaveOneOutSplit
from edgerec.features import FeatureSpec

log = logging.getLogger(__name__)


def select_rows(
    split: LeaveOneOutSplit, spec: FeatureSpec, config: ConvertConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration rows, held-out parity rows and their users (disjoint users).

    Calibration: ``calibration_samples`` rows cut from *training* sequences of one
    group of users (random prefixes, ``[MASK]`` appended, as at inference).
    Parity: the test-split input rows of other users.
    """
    rng = np.random.default_rng(seed + 1)
    users = rng.permutation(len(split.train))
    want = config.validation.num_sequences
    if len(users) >= want + 10:
        parity_users = users[:want]
    else:
        parity_users = users[: max(1, (2 * len(users)) // 3)]
        log.warning(
            "only %d users: %d parity rows instead of %d", len(users), len(parity_users), want
        )
    calib_users = np.setdiff1d(users, parity_users)
    if len(calib_users) == 0:
        calib_users = users[-1:]
    histories = []
    picks = rng.choice(calib_users, size=config.export.calibration_samples, replace=True)
    for u in picks:
        seq = split.train[int(u)]
        if len(seq) == 0:
            continue
        cut = int(rng.integers(1, len(seq) + 1))
        histories.append(seq[:cut])
    calibration = spec.encode_batch(histories)
    test_inputs = split.test_inputs()
    parity = spec.encode_batch([test_inputs[int(u)] for u in parity_users])
    return calibration, parity, parity_users


def eval_set(split: LeaveOneOutSplit, config: ConvertConfig) -> tuple[list[np.ndarray], np.ndarray]:
    """Test-split histories and targets, at most ``max_eval_users`` of them (seeded)."""
    inputs = split.test_inputs()
    targets = np.asarray(split.test_target)
    limit = config.validation.max_eval_users
    if limit and limit < len(inputs):
        rng = np.random.default_rng(config.distil.seed + 2)
        keep = np.sort(rng.choice(len(inputs), size=limit, replace=False))
        inputs = [inputs[int(i)] for i in keep]
        targets = targets[keep]
    return inputs, targets


def exclusions(histories: list[np.ndarray], mode: str, window: int) -> list[np.ndarray] | None:
    """Items removed from each user's ranking: none, the input window, or the history."""
    if mode == "none":
        return None
    if mode == "input":
        return [h[-window:] for h in histories]
    return histories
