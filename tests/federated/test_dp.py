"""Clipping, distributed noise and the RDP accountant (pinned against dp-accounting)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgerec.federated.accountant import (
    DpAccountant,
    calibrate_noise,
    compute_epsilon,
    max_rounds,
)
from edgerec.federated.clipping import clip_l2
from edgerec.federated.dp import (
    add_distributed_noise,
    device_noise_std,
    mean_update,
    privatize,
)
from edgerec.federated.fixedpoint import decode
from tests.federated.conftest import make_params


def test_clip_l2() -> None:
    d = np.array([3.0, 4.0])
    out, norm = clip_l2(d, 1.0)
    assert norm == 5.0 and np.allclose(out, [0.6, 0.8])
    assert d.tolist() == [3.0, 4.0]  # not modified
    same, norm2 = clip_l2(d, 10.0)
    assert norm2 == 5.0 and np.array_equal(same, d)
    with pytest.raises(ValueError):
        clip_l2(np.array([np.inf]), 1.0)
    with pytest.raises(ValueError):
        clip_l2(d, 0.0)


def test_distributed_noise_std() -> None:
    assert device_noise_std(2.0, 1.5, 9) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noise = add_distributed_noise(np.zeros(200_000), 2.0, 1.5, 9, rng)
    assert noise.std() == pytest.approx(1.0, rel=0.01)
    # the sum over m_min devices has std z * C
    total = sum(add_distributed_noise(np.zeros(20_000), 2.0, 1.5, 9, rng) for _ in range(9))
    assert total.std() == pytest.approx(3.0, rel=0.02)
    assert np.array_equal(add_distributed_noise(np.ones(3), 1.0, 0.0, 5), np.ones(3))


def test_privatize_clips_and_encodes() -> None:
    p = make_params(noise_multiplier=0.0, vector_length=4)
    out = privatize(np.array([3.0, 4.0, 0.0, 0.0]), p)
    assert out.clipped and out.norm == 5.0
    assert np.allclose(decode(out.values, p.frac_bits), [0.6, 0.8, 0, 0], atol=2**-16)
    with pytest.raises(ValueError, match="expects 4"):
        privatize(np.zeros(5), p)


def test_mean_update_uses_fixed_denominator() -> None:
    p = make_params(noise_multiplier=0.0, vector_length=3, cohort_target=10)
    total = np.zeros(3, np.uint32)
    for _ in range(4):
        total += privatize(np.array([0.5, -0.25, 0.0]), p).values
    assert np.allclose(mean_update(total, p), [0.2, -0.1, 0.0])
    assert np.allclose(mean_update(total, p, denominator=4), [0.5, -0.25, 0.0])
    with pytest.raises(ValueError):
        mean_update(total[:2], p)


# Reference values computed with dp_accounting 0.6 (RdpAccountant, default orders,
# PoissonSampledDpEvent(q, GaussianDpEvent(z)), add-or-remove-one).
ABADI_EPS = 5.632010670081592  # q=0.01, z=1.1, 10,000 steps, delta=1e-5
MNIST_EPS = 2.5965558697943036  # q=256/60000, z=1.1, 60 epochs (14,062 steps), delta=1e-5


def test_accountant_pinned_values() -> None:
    assert compute_epsilon(1.1, 0.01, 10_000, 1e-5) == pytest.approx(ABADI_EPS, rel=1e-9)
    assert compute_epsilon(1.1, 256 / 60000, 14_062, 1e-5) == pytest.approx(MNIST_EPS, rel=1e-9)
    assert compute_epsilon(1.1, 0.01, 0, 1e-5) == 0.0
    assert math.isinf(compute_epsilon(0.0, 0.01, 1, 1e-5))


def test_accountant_matches_dp_accounting_directly() -> None:
    import dp_accounting
    from dp_accounting import rdp

    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(0.8)), 37)
    ours = DpAccountant(0.8, 0.05, 1e-6)
    for _ in range(3):
        ours.step(10)
    ours.step(7)
    assert ours.rounds == 37
    assert ours.epsilon == pytest.approx(acc.get_epsilon(1e-6), rel=1e-12)


def test_accountant_budget_and_state() -> None:
    acc = DpAccountant(1.1, 0.01, 1e-5)
    assert acc.epsilon == 0.0 and acc.can_run(1.0) and not acc.can_run(0.1)
    acc.step(10_000)
    assert acc.epsilon == pytest.approx(ABADI_EPS, rel=1e-9)
    assert acc.can_run(ABADI_EPS + 0.01)
    assert not acc.can_run(ABADI_EPS)  # one more round exceeds the budget
    assert acc.epsilon_after(1) > acc.epsilon
    restored = DpAccountant.from_json(acc.to_json())
    assert restored.rounds == 10_000 and restored.epsilon == acc.epsilon
    # heterogeneous rounds compose
    acc.step(5, noise_multiplier=2.0, sampling_rate=0.02)
    assert acc.history[-1] == (2.0, 0.02, 5) and acc.epsilon > ABADI_EPS


def test_calibrate_noise_and_max_rounds() -> None:
    z = calibrate_noise(8.0, 1e-5, 0.01, 10_000)
    assert compute_epsilon(z, 0.01, 10_000, 1e-5) <= 8.0
    assert compute_epsilon(z * 0.99, 0.01, 10_000, 1e-5) > 8.0
    assert z == pytest.approx(0.9169, abs=1e-3)
    n = max_rounds(1.1, 0.01, 1e-5, ABADI_EPS)
    assert n == 10_000
    assert max_rounds(0.3, 1.0, 1e-5, 1.0) == 0


def test_mean_update_in_float64_is_the_unrounded_mean() -> None:
    p = make_params(noise_multiplier=0.0, vector_length=3, cohort_target=7)
    total = np.zeros(3, np.uint32)
    for _ in range(3):
        total += privatize(np.array([0.3, -0.7, 0.1]), p).values
    exact = mean_update(total, p, dtype=np.float64)
    assert exact.dtype == np.float64 and mean_update(total, p).dtype == np.float32
    assert np.array_equal(exact, decode(total, p.frac_bits) / 7)
    assert np.array_equal(exact.astype(np.float32), mean_update(total, p))
