"""The simulation's federated evaluation: real SecAgg+ over device reports, the same
decision the plain sum gives, and DP noise when asked for."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.federated.evaluation import decide, device_report
from edgerec.simulation.federated_eval import (
    EventMetrics,
    FederatedEvalConfig,
    federated_evaluation,
)


def _metrics(
    devices: int, events: int, effect: float, seed: int
) -> tuple[EventMetrics, EventMetrics]:
    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(devices), events)
    rng.shuffle(owner)  # events of a device need not be contiguous
    cur = rng.uniform(0, 0.7, owner.size)
    cand = np.clip(cur + effect + rng.normal(0, 0.1, owner.size), 0, 1)
    return (
        EventMetrics(cur, (cur > 0.35).astype(float), owner),
        EventMetrics(cand, (cand > 0.35).astype(float), owner),
    )


def test_the_secure_sum_gives_the_decision_of_the_plain_sum() -> None:
    current, candidate = _metrics(60, 3, -0.04, seed=0)
    cfg = FederatedEvalConfig(max_events=3, min_events=50, min_cohort_fraction=0.9)
    got = federated_evaluation(current, candidate, cfg)
    plain = np.zeros(10)
    for d in range(60):
        idx = np.flatnonzero(current.owner == d)
        plain += device_report(
            current.ndcg[idx], candidate.ndcg[idx], current.hr[idx], candidate.hr[idx], 3
        )
    want = decide(plain, 3, min_events=50)
    assert got["decision"] == want.decision == "block"
    assert got["cohort"] == got["survivors"] == 60 and got["events"] == pytest.approx(180)
    assert got["ndcg_diff"] == pytest.approx(want.ndcg_diff, abs=1e-5)
    assert got["z"] == pytest.approx(want.z, rel=1e-3)
    assert got["noise_multiplier"] == 0.0 and got["epsilon"] is None


def test_a_better_candidate_is_published_and_dp_noise_is_calibrated() -> None:
    current, candidate = _metrics(200, 2, +0.05, seed=1)
    cfg = FederatedEvalConfig(max_events=2, min_events=50, epsilon=4.0, delta=1e-3)
    got = federated_evaluation(current, candidate, cfg)
    assert got["decision"] == "publish" and got["z"] > 0
    assert got["noise_multiplier"] > 0 and got["epsilon"] == 4.0 and got["noise_std"] > 0


def test_sampling_caps_the_cohort_and_mismatched_events_are_refused() -> None:
    current, candidate = _metrics(300, 1, 0.0, seed=2)
    got = federated_evaluation(
        current, candidate, FederatedEvalConfig(max_events=1, max_cohort=100, min_events=10)
    )
    assert got["sampling_rate"] == pytest.approx(1 / 3) and 40 < got["cohort"] < 160
    other = EventMetrics(candidate.ndcg, candidate.hr, candidate.owner[::-1].copy())
    with pytest.raises(ValueError, match="same events"):
        federated_evaluation(current, other, FederatedEvalConfig())
