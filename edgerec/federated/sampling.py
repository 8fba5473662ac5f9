"""Poisson cohort sampling with a bounded cohort, and what the bounds cost in δ.

The accountant analyses each round as a *Poisson*-sampled Gaussian mechanism: every
device of the population takes part independently with probability ``q``. A real
round also needs an upper bound on the cohort (secure-aggregation graph, fixed-point
headroom, server memory) and a lower one (``min_cohort``: the distributed noise only
reaches its calibrated level with that many devices). Truncating the sample at the
upper bound would break the independence the amplification argument rests on, so the
coordinator does not truncate: a round sampled outside ``[min_cohort, m]`` fails and
releases nothing, and ``m`` is chosen so that the upper tail has probability at most
``β``; the lower tail is whatever ``min_cohort`` leaves (:func:`min_cohort_for`
gives the largest one with the same tail).

The released rounds then differ from the Poisson mechanism only on an event of
probability ``β_r`` = upper + lower tail per round. If a mechanism ``M'`` is (ε, δ)-DP and
``TV(M(D), M'(D)) ≤ β`` on every dataset, then ``M`` is (ε, δ + β(1 + e^ε))-DP;
over rounds the β add up. The coordinator reports this extra δ separately
(``delta_sampling_cap``) and the total (``delta_total``) next to the accountant's ε.
"""

from __future__ import annotations

import math

#: default per-round probability that the sampled cohort exceeds the bound; the
#: bound costs at most ``β (1 + e^ε)`` of δ per round, with ε the reported epsilon
DEFAULT_CAP_TAIL = 1e-12


def binomial_tail(population: int, q: float, m: int) -> float:
    """``P[Binomial(population, q) > m]``."""
    from scipy.stats import binom

    if m >= population:
        return 0.0
    return float(binom.sf(m, population, q))


def max_cohort(population: int, q: float, tail: float = DEFAULT_CAP_TAIL) -> int:
    """The smallest ``m`` with ``P[Binomial(population + 1, q) > m] <= tail``.

    ``population + 1`` so the bound also holds on the neighbouring dataset with one
    more device (the tail only grows with the population).
    """
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail must be in (0, 1) (got {tail})")
    n = int(population) + 1
    if q >= 1.0:
        return n
    from scipy.stats import binom

    m = int(binom.isf(tail, n, q))
    while m > 0 and binomial_tail(n, q, m - 1) <= tail:
        m -= 1
    while binomial_tail(n, q, m) > tail:
        m += 1
    return min(m, n)


def lower_tail(population: int, q: float, m: int) -> float:
    """``P[Binomial(population, q) < m]``."""
    from scipy.stats import binom

    if m <= 0:
        return 0.0
    return float(binom.cdf(m - 1, population, q))


def min_cohort_for(population: int, q: float, tail: float = DEFAULT_CAP_TAIL) -> int:
    """The largest ``m`` with ``P[Binomial(population - 1, q) < m] <= tail`` (at least 0);
    ``population - 1`` covers the neighbouring dataset with one device fewer."""
    n = max(int(population) - 1, 0)
    if q >= 1.0:
        return n
    from scipy.stats import binom

    m = max(int(binom.ppf(tail, n, q)), 0)
    while m > 0 and lower_tail(n, q, m) > tail:
        m -= 1
    while m < n and lower_tail(n, q, m + 1) <= tail:
        m += 1
    return m


def round_tail(population: int, q: float, min_cohort: int, max_cohort: int) -> float:
    """Probability that a Poisson sample of a neighbouring population falls outside
    ``[min_cohort, max_cohort]`` (upper tail at ``population + 1``, lower at ``- 1``)."""
    if q >= 1.0:
        return 0.0
    upper = binomial_tail(population + 1, q, max_cohort)
    return upper + lower_tail(max(population - 1, 0), q, min_cohort)


def cap_delta(tails: list[float], epsilon: float) -> float:
    """Extra δ of the rounds' cohort bounds: ``Σ β_r (1 + e^ε)`` (``inf`` if ε is)."""
    total = float(sum(tails))
    if total == 0.0:
        return 0.0
    if not math.isfinite(epsilon) or epsilon > 700:
        return math.inf
    return total * (1.0 + math.exp(epsilon))
