"""The cohort bound of Poisson-sampled rounds and what it adds to δ."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgerec.federated.sampling import (
    binomial_tail,
    cap_delta,
    lower_tail,
    max_cohort,
    min_cohort_for,
    round_tail,
)


@pytest.mark.parametrize(("population", "expected"), [(291, 50), (53_982, 100), (53_982, 1000)])
def test_max_cohort_is_the_smallest_bound_with_the_tail(population: int, expected: int) -> None:
    q = expected / population
    m = max_cohort(population, q, 1e-12)
    assert binomial_tail(population + 1, q, m) <= 1e-12 < binomial_tail(population + 1, q, m - 1)
    assert expected < m < population + 1


def test_binomial_tail_matches_a_simulation() -> None:
    rng = np.random.default_rng(0)
    draws = rng.binomial(200, 0.1, size=200_000)
    for m in (20, 25, 30):
        assert binomial_tail(200, 0.1, m) == pytest.approx(np.mean(draws > m), abs=3e-3)
    assert binomial_tail(10, 0.5, 10) == 0.0


def test_max_cohort_without_sampling_and_bad_tail() -> None:
    assert max_cohort(10, 1.0) == 11
    with pytest.raises(ValueError, match="tail"):
        max_cohort(10, 0.5, 0.0)


def test_cap_delta_adds_tails_times_one_plus_e_to_the_epsilon() -> None:
    assert cap_delta([], 3.0) == 0.0 and cap_delta([0.0, 0.0], math.inf) == 0.0
    assert cap_delta([1e-12, 2e-12], 2.0) == pytest.approx(3e-12 * (1 + math.e**2))
    assert cap_delta([1e-12], math.inf) == math.inf


def test_min_cohort_for_is_the_largest_bound_with_the_tail() -> None:
    m = min_cohort_for(1000, 0.1, 1e-12)
    assert lower_tail(999, 0.1, m) <= 1e-12 < lower_tail(999, 0.1, m + 1)
    assert 0 < m < 100
    assert min_cohort_for(10, 1.0) == 9 and lower_tail(10, 0.5, 0) == 0.0
    assert round_tail(1000, 0.1, m, max_cohort(1000, 0.1)) <= 2e-12
    assert round_tail(10, 1.0, 5, 10) == 0.0
