"""The generator's oracle: its probabilities are the ones the generator samples from."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.data import leave_one_out
from edgerec.data.preprocess import build_sequences
from edgerec.data.synth import SynthConfig, generate_synthetic, iter_synthetic
from edgerec.data.synth_oracle import NextItemOracle, oracle_ranks
from edgerec.errors import InputError
from edgerec.metrics import metrics_from_ranks

CFG = {"users": 3000, "items": 800, "mean_length": 15.0, "seed": 3, "clusters": 40}


def _transitions(cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The users' tastes, and the user code and ``[previous, next]`` item codes of every
    generated event after a user's first."""
    users, prev, nxt = [], [], []
    taste = np.zeros((cfg.users, cfg.taste_clusters), dtype=np.int64)
    for chunk in iter_synthetic(cfg):
        taste[chunk.user_codes] = chunk.taste
        order = np.argsort(chunk.users, kind="stable")  # per user, generation order
        u, items = chunk.users[order], chunk.items[order]
        same = u[1:] == u[:-1]
        users.append(u[1:][same])
        prev.append(items[:-1][same])
        nxt.append(items[1:][same])
    pairs = np.stack([np.concatenate(prev), np.concatenate(nxt)])
    return taste, np.concatenate(users), pairs


def _calibration(oracle: NextItemOracle, taste, users, pairs) -> np.ndarray:
    """Two statistics of the observed next items, each as (observed - expected) / sd
    under the oracle: how often its top-10 holds the next item, and the probability it
    gave the next item (expected: the sum of its squared probabilities)."""
    obs, exp, var = np.zeros(2), np.zeros(2), np.zeros(2)
    for start in range(0, users.size, 2048):
        sl = slice(start, start + 2048)
        probs = oracle.probabilities(pairs[0, sl], taste[users[sl]])
        top = np.argpartition(-probs, 10, axis=1)[:, :10]
        mass = np.take_along_axis(probs, top, axis=1).sum(axis=1)
        p_next = probs[np.arange(probs.shape[0]), pairs[1, sl]]
        sq, cube = (probs**2).sum(axis=1), (probs**3).sum(axis=1)
        obs += [(top == pairs[1, sl, None]).any(axis=1).sum(), p_next.sum()]
        exp += [mass.sum(), sq.sum()]
        var += [(mass * (1 - mass)).sum(), (cube - sq**2).sum()]
    return (obs - exp) / np.sqrt(var)


def _log_likelihood(oracle: NextItemOracle, taste, users, pairs) -> np.ndarray:
    out = np.empty(users.size)
    for start in range(0, users.size, 2048):
        sl = slice(start, start + 2048)
        probs = oracle.probabilities(pairs[0, sl], taste[users[sl]])
        out[sl] = np.log(probs[np.arange(probs.shape[0]), pairs[1, sl]])
    return out


@pytest.mark.parametrize(
    "options",
    [{}, {"p_chain": 0.8, "p_stay": 0.1, "p_noise": 0.02}, {"p_chain": 0.05, "p_taste": 0.9}],
)
def test_probabilities_sum_to_one_and_match_the_generator(options):
    cfg = SynthConfig(**CFG, **options)
    oracle = NextItemOracle(cfg)
    taste, users, pairs = _transitions(cfg)
    probs = oracle.probabilities(pairs[0, :500], taste[users[:500]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs >= 0).all()
    # calibrated: what it predicts about the next items is what the generator did
    z = _calibration(oracle, taste, users, pairs)
    assert (abs(z) < 4).all(), z
    # the users' own tastes explain their events better than other users' tastes
    gain = _log_likelihood(oracle, taste, users, pairs) - _log_likelihood(
        oracle, np.roll(taste, 1, axis=0), users, pairs
    )
    assert gain.mean() > 4 * gain.std() / np.sqrt(gain.size)


def test_a_wrong_chain_step_is_detected():
    cfg = SynthConfig(**CFG, p_chain=0.8, p_stay=0.1, p_noise=0.02)
    oracle = NextItemOracle(cfg)
    taste, users, pairs = _transitions(cfg)
    oracle.step_prob = np.roll(oracle.step_prob, 1)  # steps of 2 made the likeliest
    assert (abs(_calibration(oracle, taste, users, pairs)) > 4).any()


def test_oracle_ranks_on_a_split_beat_what_a_model_can_see():
    log = generate_synthetic(1500, 300, 12.0, 1, p_chain=0.8, p_stay=0.1, p_noise=0.02)
    split = leave_one_out(build_sequences(log.interactions))
    oracle = NextItemOracle(log.config)
    test = metrics_from_ranks(oracle_ranks(oracle, split, log.taste), (10,))
    valid = metrics_from_ranks(oracle_ranks(oracle, split, log.taste, which="valid"), (10,))
    blind = oracle_ranks(oracle, split, np.roll(log.taste, 7, axis=0))
    assert test["NDCG@10"] > metrics_from_ranks(blind, (10,))["NDCG@10"]
    assert 0.3 < test["NDCG@10"] < 1.0 and 0.3 < valid["NDCG@10"] < 1.0


def test_bad_inputs_are_named():
    log = generate_synthetic(200, 100, 6.0, 0)
    split = leave_one_out(build_sequences(log.interactions))
    oracle = NextItemOracle(log.config)
    with pytest.raises(InputError, match="taste must have shape"):
        oracle.probabilities(np.array([0, 1]), np.zeros((2, 1), np.int64))
    with pytest.raises(InputError, match="which"):
        oracle_ranks(oracle, split, log.taste, which="train")
    with pytest.raises(InputError, match="cannot have made"):
        oracle_ranks(NextItemOracle(SynthConfig(users=200, items=50)), split, log.taste)
