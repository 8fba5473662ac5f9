"""On-device training of the additive item-bias head."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.errors import InputError
from edgerec.features import FeatureSpec
from edgerec.federated.local import Examples, LocalTrainer, build_examples

N = 30
SPEC = FeatureSpec(max_len=6, num_items=N)


class ToyModel:
    """A fixed random 'model': score = sum of item embeddings of the row @ item table."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.emb = rng.normal(0, 0.3, (N + 2, 8)).astype(np.float32)
        self.emb[0] = 0
        self.calls = 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.emb[rows].sum(axis=1) @ self.emb[1 : N + 1].T


def _history(seed: int = 0, length: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    favourites = np.array([3, 7, 7, 12, 25])
    return np.where(
        rng.random(length) < 0.7, rng.choice(favourites, length), rng.integers(1, N + 1, length)
    )


def test_examples_match_feature_spec_encoding() -> None:
    h = _history(length=9)
    rows, targets = build_examples(SPEC, h, max_examples=100)
    assert rows.shape == (8, SPEC.max_len) and rows.dtype == np.int32
    for j, i in enumerate(range(1, 9)):
        assert np.array_equal(rows[j], SPEC.encode(h[:i]))
        assert targets[j] == h[i]
    rows, targets = build_examples(SPEC, h, max_examples=3)
    assert np.array_equal(targets, h[-3:])
    assert build_examples(SPEC, h[:1], 10)[0].shape == (0, SPEC.max_len)
    with pytest.raises(InputError):
        build_examples(SPEC, np.array([1, N + 1]), 10)


def test_global_update_reduces_loss_and_touches_only_its_output() -> None:
    model = ToyModel()
    tr = LocalTrainer(SPEC, model, lr=1.0, epochs=5, batch_size=16)
    h = _history()
    g = np.random.default_rng(1).normal(0, 0.1, N).astype(np.float32)
    local = np.zeros(N, np.float32)
    g0, local0 = g.copy(), local.copy()
    delta = tr.train_global(h, g, local)
    assert delta.dtype == np.float32 and delta.shape == (N,)
    assert np.array_equal(g, g0) and np.array_equal(local, local0)  # inputs untouched
    assert tr.loss(h, g + delta) < tr.loss(h, g) - 0.1
    assert delta[[2, 6, 11, 24]].min() > 0  # the favourites went up
    assert np.array_equal(delta, tr.train_global(h, g, local))  # deterministic
    assert model.calls == 1  # base scores computed once and cached


def test_local_personalisation_reduces_loss_with_global_fixed() -> None:
    model = ToyModel()
    tr = LocalTrainer(SPEC, model, lr=1.0, epochs=5, local_l2=1e-2)
    h = _history(seed=2)
    g = np.zeros(N, np.float32)
    local = tr.train_local(h, g)
    assert np.array_equal(g, np.zeros(N))
    assert tr.loss(h, g, local) < tr.loss(h, g) - 0.1
    again = tr.train_local(h, g, local)  # continues from the previous local bias
    assert tr.loss(h, g, again) <= tr.loss(h, g, local)
    assert model.calls == 1


def test_loss_matches_direct_softmax() -> None:
    model = ToyModel()
    tr = LocalTrainer(SPEC, model)
    h = _history(length=12)
    ex = tr.prepare(h)
    assert isinstance(ex, Examples) and len(ex) == 11
    b = np.linspace(-1, 1, N).astype(np.float32)
    z = ex.scores.astype(np.float64) + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(11), ex.targets]))
    assert tr.loss(ex, b) == pytest.approx(expected, rel=1e-5)


def test_edge_cases_and_validation() -> None:
    tr = LocalTrainer(SPEC, ToyModel(), cache_size=1)
    assert np.array_equal(tr.train_global(np.array([4]), np.zeros(N)), np.zeros(N))
    with pytest.raises(InputError, match="shape"):
        tr.train_global(_history(), np.zeros(N + 1))
    with pytest.raises(InputError, match="NaN"):
        tr.train_local(_history(), np.full(N, np.nan))
    with pytest.raises(InputError):
        LocalTrainer(SPEC, ToyModel(), lr=0)
    bad = LocalTrainer(SPEC, lambda rows: np.zeros((len(rows), N + 1)))
    with pytest.raises(InputError, match="score_fn"):
        bad.prepare(_history())
    tr.prepare(_history(1))
    tr.prepare(_history(2))
    assert len(tr._cache) == 1


def test_training_is_fast() -> None:
    import time

    spec = FeatureSpec(max_len=50, num_items=2000)
    scores = np.random.default_rng(0).normal(size=(200, 2000)).astype(np.float32)
    tr = LocalTrainer(spec, lambda rows: scores[: len(rows)], epochs=3)
    h = np.random.default_rng(1).integers(1, 2001, 201)
    tr.prepare(h)
    t0 = time.perf_counter()
    tr.train_global(h, np.zeros(2000, np.float32))
    assert time.perf_counter() - t0 < 1.0  # ~10 ms expected; generous for a shared CI box
