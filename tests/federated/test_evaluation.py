"""Federated evaluation: device reports and the coordinator's one-sided decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerec.federated.evaluation import (
    BLOCK,
    FIELDS,
    INCONCLUSIVE,
    PUBLISH,
    decide,
    device_report,
    event_metrics,
    report_bound,
)


def _reports(rng, devices, events, effect, max_events):
    """Sum of device reports whose candidate differs from the current head by ``effect``
    per event on average; also the per-event differences."""
    total = np.zeros(len(FIELDS))
    diffs = []
    for _ in range(devices):
        m = int(rng.integers(1, events + 1))
        cur = rng.uniform(0, 0.6, m)
        cand = np.clip(cur + effect + rng.normal(0, 0.15, m), 0, 1)
        hit_c = (cur > 0.3).astype(float)
        hit_k = (cand > 0.3).astype(float)
        total += device_report(cur, cand, hit_c, hit_k, max_events)
        diffs.append((cand - cur)[-max_events:])
    return total, np.concatenate(diffs)


def test_event_metrics_rank_the_target_over_the_catalog() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.3]], np.float32)
    ndcg, hr = event_metrics(scores, np.array([1, 1]))
    assert ndcg[0] == pytest.approx(1.0) and hr[0] == 1.0
    assert ndcg[1] == pytest.approx(1 / math.log2(4)) and hr[1] == 1.0


def test_a_report_counts_only_the_most_recent_events() -> None:
    cur = np.array([0.0, 0.0, 0.2, 0.5])
    cand = np.array([1.0, 1.0, 0.4, 0.5])
    rep = dict(zip(FIELDS, device_report(cur, cand, cur, cand, 2), strict=True))
    assert rep["events"] == 2 and rep["events_sq"] == pytest.approx(4 / 2)
    assert rep["ndcg_current"] == pytest.approx(0.7)
    assert rep["ndcg_diff"] == pytest.approx(0.2)
    assert rep["ndcg_diff_sq"] == pytest.approx(0.04 / 2)
    assert rep["ndcg_diff_x_events"] == pytest.approx(0.2 * 2 / 2)


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(0, 12),
    max_events=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_an_honest_report_never_exceeds_the_rounds_clip(m, max_events, seed) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0, 1, m), rng.uniform(0, 1, m)
    worst = np.zeros(m) if seed % 2 else np.ones(m)  # extremes as well as random values
    rep = device_report(a, worst, b, 1 - worst, max_events)
    assert np.linalg.norm(rep) <= report_bound(max_events) + 1e-9
    assert np.all(np.abs(rep) <= max_events + 1e-9)


def test_bad_reports_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        device_report(np.zeros(2), np.zeros(3), np.zeros(2), np.zeros(2), 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        device_report(np.array([1.5]), np.zeros(1), np.zeros(1), np.zeros(1), 5)
    with pytest.raises(ValueError, match="max_events"):
        device_report(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), 0)
    with pytest.raises(ValueError, match="finite values"):
        decide(np.zeros(3), 5)
    with pytest.raises(ValueError, match="alpha"):
        decide(np.zeros(len(FIELDS)), 5, alpha=0.9)


def test_a_clearly_worse_candidate_is_blocked_and_a_better_one_published() -> None:
    rng = np.random.default_rng(0)
    worse, _ = _reports(rng, 400, 5, -0.03, 5)
    better, _ = _reports(rng, 400, 5, +0.03, 5)
    v = decide(worse, 5)
    assert v.decision == BLOCK and v.z < -1.645 and v.p_worse < 0.05 and v.ndcg_diff < 0
    assert "worse" in v.reason
    w = decide(better, 5)
    assert w.decision == PUBLISH and w.z > 0 and w.ndcg_candidate > w.ndcg_current


def test_too_few_events_are_inconclusive() -> None:
    rng = np.random.default_rng(1)
    few, _ = _reports(rng, 10, 3, -0.2, 3)
    v = decide(few, 3, min_events=100)
    assert v.decision == INCONCLUSIVE and "fewer than the 100" in v.reason
    assert v.to_dict()["z"] is None


def test_the_standard_error_matches_the_per_event_spread_with_one_event_per_device() -> None:
    """With one event per device the sandwich estimate is the plain standard error."""
    rng = np.random.default_rng(2)
    sums, diffs = _reports(rng, 500, 1, -0.01, 1)
    v = decide(sums, 1)
    n = diffs.size
    plain = math.sqrt(np.mean((diffs - diffs.mean()) ** 2) / n)
    assert v.events == n and v.ndcg_diff == pytest.approx(diffs.mean())
    assert v.se == pytest.approx(plain, rel=1e-9)


def test_dp_noise_widens_the_standard_error() -> None:
    rng = np.random.default_rng(3)
    sums, _ = _reports(rng, 300, 5, -0.02, 5)
    quiet, noisy = decide(sums, 5), decide(sums, 5, noise_std=30.0)
    assert noisy.se > quiet.se and abs(noisy.z) < abs(quiet.z)
    # an evaluation too coarse to see the harm that matters decides nothing
    coarse = decide(sums, 5, noise_std=30.0, max_se=quiet.se * 2)
    assert coarse.decision == INCONCLUSIVE and "too uncertain" in coarse.reason
    assert coarse.z == pytest.approx(noisy.z)
    assert decide(sums, 5, max_se=quiet.se * 2).decision == quiet.decision


def test_the_test_holds_its_level_when_the_candidate_is_no_worse() -> None:
    """Under the null (no difference) the candidate is blocked in about alpha of the
    evaluations, not more: the sandwich variance accounts for devices' alike events."""
    rng = np.random.default_rng(4)
    blocked = 0
    trials = 300
    for _ in range(trials):
        total = np.zeros(len(FIELDS))
        for _ in range(80):
            m = int(rng.integers(1, 6))
            cur = rng.uniform(0, 0.6, m)
            shift = rng.normal(0, 0.1)  # the device's events move together
            cand = np.clip(cur + shift + rng.normal(0, 0.02, m), 0, 1)
            cur = np.clip(cur, 0, 1)
            total += device_report(cur, cand, cur, cand, 5)
        blocked += decide(total, 5, min_events=10).decision == BLOCK
    # clipping at 0 / 1 biases the null slightly; allow sampling error around 0.05
    assert blocked / trials < 0.10
