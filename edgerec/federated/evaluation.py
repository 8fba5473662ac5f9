"""Federated evaluation: devices compare the current head with a candidate on their own
held-out recent events; only the secure sum of their reports reaches the coordinator,
which publishes the candidate unless a one-sided paired test finds it worse.

**What a device reports.** For each of its (at most ``max_events``) most recent
held-out events ``e`` the device ranks the target item over the full catalog under the
current head and under the candidate: NDCG@10 ``c_e`` / ``k_e`` and HR@10 likewise, and
the paired difference ``d_e = k_e - c_e``. It sends one vector of :data:`FIELDS`:
its event count ``m``, ``m**2 / M``, and per metric the current head's sum
``C = sum c_e``, the difference's sum ``D = sum d_e``, ``D**2 / M`` and ``D * m / M``
(``M = max_events``; the products are divided by ``M`` so that every field has the
same range). Per-device sums (not
per-event squares) make the test robust to a device's events being alike: the secure
sum of these fields is exactly what the cluster-robust (sandwich) variance of the
ratio ``sum D / sum m`` needs, one cluster per device.

**Bounded by construction.** Every field of a device with ``m <= M`` events lies in
``[-M, M]``, so the vector's L2 norm is at most :func:`report_bound`, ``M * sqrt(10)``
— the round's clip ``C``. Clipping therefore never changes
an honest report, and distributed DP noise (:func:`edgerec.federated.dp.privatize`) of
``z * C`` on the secure sum is the Gaussian mechanism with sensitivity ``C`` (one
report per device per evaluation round), accounted like a training round.

**The decision** (:func:`decide`): ``diff = sum D / n`` with ``n = sum m``; its variance
is the sandwich estimate ``sum (D_j - diff * m_j)**2 / n**2`` plus the DP noise's own
contribution (known from the round's noise std); ``z = diff / se`` and the one-sided
p-value of "the candidate is worse" is ``Phi(z)``. With fewer than ``min_events``
events, or a standard error above ``max_se`` (an evaluation, e.g. one drowned in DP
noise, too coarse to see the harm that matters), the evaluation is *inconclusive* and
nothing is published; with ``p < alpha`` the candidate is *blocked*; otherwise it is
*published*. The rule guards against a
release that measurably hurts; it does not require a candidate to be significantly
better (a head that helps a little would otherwise never ship).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgerec.metrics import per_user_metrics, target_ranks

__all__ = [
    "BLOCK",
    "FIELDS",
    "INCONCLUSIVE",
    "PUBLISH",
    "EvaluationVerdict",
    "decide",
    "device_report",
    "event_metrics",
    "report_bound",
]

#: the fields of one device's report, in order (see the module docstring)
FIELDS = (
    "events",
    "events_sq",
    "ndcg_current",
    "ndcg_diff",
    "ndcg_diff_sq",
    "ndcg_diff_x_events",
    "hr_current",
    "hr_diff",
    "hr_diff_sq",
    "hr_diff_x_events",
)
PUBLISH, BLOCK, INCONCLUSIVE = "publish", "block", "inconclusive"
#: cut-off of the ranking metrics
K = 10


def event_metrics(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: NDCG@10 and HR@10 of ``targets`` (indices ``1..n``) under full-catalog
    ``scores`` ``[events, n]`` (history kept in the ranking, ties against the target)."""
    m = per_user_metrics(target_ranks(scores, targets), K)
    return m[f"NDCG@{K}"], m[f"HR@{K}"]


def report_bound(max_events: int) -> float:
    """The L2 norm no honest report with at most ``max_events`` events exceeds: the clip
    of an evaluation round."""
    if not (isinstance(max_events, int) and max_events >= 1):
        raise ValueError(f"max_events must be a positive int (got {max_events!r})")
    return float(max_events * math.sqrt(len(FIELDS)))


def device_report(
    ndcg_current: np.ndarray,
    ndcg_candidate: np.ndarray,
    hr_current: np.ndarray,
    hr_candidate: np.ndarray,
    max_events: int,
) -> np.ndarray:
    """One device's report (float64, :data:`FIELDS`) from its per-event metrics, oldest
    first; only the last ``max_events`` events count.

    Raises:
        ValueError: arrays of different lengths, or metrics outside ``[0, 1]``.
    """
    arrays = [np.asarray(a, np.float64).ravel() for a in (
        ndcg_current, ndcg_candidate, hr_current, hr_candidate
    )]  # fmt: skip
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"per-event metrics differ in length: {[a.size for a in arrays]}")
    for a in arrays:
        if a.size and not (np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0):
            raise ValueError("per-event metrics must lie in [0, 1]")
    report_bound(max_events)  # validates max_events
    nc, nk, hc, hk = (a[-max_events:] for a in arrays)
    m, big = float(nc.size), float(max_events)
    d_ndcg, d_hr = float((nk - nc).sum()), float((hk - hc).sum())
    return np.array(
        [m, m * m / big,
         float(nc.sum()), d_ndcg, d_ndcg**2 / big, d_ndcg * m / big,
         float(hc.sum()), d_hr, d_hr**2 / big, d_hr * m / big],
        np.float64,
    )  # fmt: skip


@dataclass(frozen=True)
class EvaluationVerdict:
    """The outcome of one federated evaluation.

    Attributes:
        decision: :data:`PUBLISH`, :data:`BLOCK` or :data:`INCONCLUSIVE`.
        reason: one sentence a release engineer can read.
        events: held-out events in the (noised) sum.
        ndcg_current, ndcg_candidate, ndcg_diff: mean NDCG@10 per event.
        se: standard error of ``ndcg_diff`` (devices as clusters, plus the DP noise).
        z: ``ndcg_diff / se``.
        p_worse: one-sided p-value of "the candidate is worse".
        hr_current, hr_candidate, hr_diff: mean HR@10 per event (reported, not tested).
        alpha: the test's level.
        min_events: fewest events for a decision.
        noise_std: std of the DP noise on each summed field (0 without DP).
    """

    decision: str
    reason: str
    events: float
    ndcg_current: float
    ndcg_candidate: float
    ndcg_diff: float
    se: float
    z: float
    p_worse: float
    hr_current: float
    hr_candidate: float
    hr_diff: float
    alpha: float
    min_events: int
    noise_std: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``None`` where a statistic is undefined)."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


def decide(
    sums: np.ndarray,
    max_events: int,
    *,
    alpha: float = 0.05,
    min_events: int = 100,
    noise_std: float = 0.0,
    max_se: float | None = None,
) -> EvaluationVerdict:
    """The decision on a candidate from the (possibly noised) sum of device reports.

    Args:
        sums: the summed reports (:data:`FIELDS`).
        max_events: the ``max_events`` the devices reported with.
        alpha: level of the one-sided test "the candidate is worse".
        min_events: fewest held-out events for a decision (fewer: inconclusive).
        noise_std: std of the DP noise in each summed field (the round's
            ``noise_multiplier * clip * sqrt(survivors / min_cohort)``); it widens ``se``.
        max_se: largest standard error of the NDCG@10 difference a decision may rest on
            (None: any).

    Raises:
        ValueError: wrong length, non-finite sums, or ``alpha`` outside ``(0, 0.5]``.
    """
    s = np.asarray(sums, np.float64).ravel()
    if s.shape != (len(FIELDS),) or not np.all(np.isfinite(s)):
        raise ValueError(f"sums must be {len(FIELDS)} finite values ({', '.join(FIELDS)})")
    if not 0 < alpha <= 0.5:
        raise ValueError(f"alpha must be in (0, 0.5] (got {alpha})")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be finite and >= 0 (got {noise_std})")
    report_bound(max_events)  # validates max_events
    f = dict(zip(FIELDS, s.tolist(), strict=True))
    for name in ("events_sq", "ndcg_diff_sq", "ndcg_diff_x_events"):
        f[name] *= max_events
    n = f["events"]
    common = {"alpha": alpha, "min_events": int(min_events), "noise_std": noise_std}
    if n < max(1, min_events):
        return EvaluationVerdict(
            INCONCLUSIVE,
            f"{n:.0f} held-out events, fewer than the {min_events} a decision needs",
            n, *([math.nan] * 9), **common,
        )  # fmt: skip
    diff = f["ndcg_diff"] / n
    # sandwich variance of the ratio sum(D) / sum(m), clusters = devices
    spread = f["ndcg_diff_sq"] - 2 * diff * f["ndcg_diff_x_events"] + diff**2 * f["events_sq"]
    # the DP noise on sum(D) and sum(m) adds its own variance to diff
    var = (max(spread, 0.0) + noise_std**2 * (1.0 + diff**2)) / n**2
    se = math.sqrt(var)
    z = diff / se if se > 0 else (math.inf if diff >= 0 else -math.inf)
    p_worse = 0.5 * math.erfc(-z / math.sqrt(2.0))  # Phi(z)
    current = f["ndcg_current"] / n
    hr_current, hr_diff = f["hr_current"] / n, f["hr_diff"] / n
    stats = (
        n, current, current + diff, diff, se, z, p_worse,
        hr_current, hr_current + hr_diff, hr_diff,
    )  # fmt: skip
    if max_se is not None and se > max_se:
        reason = (
            f"too uncertain to decide: NDCG@10 {diff:+.4f} per event with standard error "
            f"{se:.4f} > {max_se:g}"
        )
        return EvaluationVerdict(INCONCLUSIVE, reason, *stats, **common)
    if p_worse < alpha:
        reason = (
            f"the candidate is worse: NDCG@10 {diff:+.4f} per event (z = {z:.2f}, "
            f"one-sided p = {p_worse:.3g} < {alpha:g})"
        )
        return EvaluationVerdict(BLOCK, reason, *stats, **common)
    reason = (
        f"not worse: NDCG@10 {diff:+.4f} per event (z = {z:.2f}, one-sided p = "
        f"{p_worse:.3g} >= {alpha:g})"
    )
    return EvaluationVerdict(PUBLISH, reason, *stats, **common)


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
