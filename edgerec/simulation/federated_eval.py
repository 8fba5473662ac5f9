"""A federated evaluation of a candidate head, run the way the fleet would run it.

Devices are Poisson-sampled; each computes its report on its own held-out events
(:func:`edgerec.federated.evaluation.device_report`), privatises it with the round's
distributed DP noise (:func:`edgerec.federated.dp.privatize`, the same pipeline as a
training update), and the real SecAgg+ protocol (:func:`.secagg_round.run_secagg_round`)
sums the reports; :func:`edgerec.federated.evaluation.decide` judges the sum. With DP on,
the evaluation is its own release: its noise multiplier is calibrated to
``epsilon`` for one round at its sampling rate, and that ε is reported beside the
training rows' ε (it adds to them under composition).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerec.federated.evaluation import FIELDS, decide, device_report, report_bound

__all__ = ["EventMetrics", "FederatedEvalConfig", "federated_evaluation"]


@dataclass(frozen=True)
class EventMetrics:
    """Per held-out event: NDCG@10 and HR@10 under one head, and the owning device."""

    ndcg: np.ndarray
    hr: np.ndarray
    owner: np.ndarray


@dataclass(frozen=True)
class FederatedEvalConfig:
    """How the simulated fleet evaluates a candidate.

    Attributes:
        sampling_rate: each device's probability of taking part (capped so that the
            expected cohort is at most ``max_cohort``).
        max_events: most recent held-out events a device reports on.
        alpha: level of the one-sided test "the candidate is worse".
        min_events: fewest events for a decision.
        max_se: largest standard error a decision may rest on (None: any).
        epsilon: the evaluation's own ε (one round); None: no DP noise.
        delta: its δ.
        max_cohort: cap on the expected cohort (SecAgg+ work grows with it).
        min_cohort_fraction: slack of the round's minimum cohort for dropouts.
        seed: sampling and noise seed.
    """

    sampling_rate: float = 1.0
    max_events: int = 5
    alpha: float = 0.05
    min_events: int = 100
    max_se: float | None = None
    epsilon: float | None = None
    delta: float = 1e-5
    max_cohort: int = 1000
    min_cohort_fraction: float = 0.5
    seed: int = 0


def federated_evaluation(
    current: EventMetrics, candidate: EventMetrics, cfg: FederatedEvalConfig
) -> dict[str, Any]:
    """Evaluate ``candidate`` against ``current`` on a sampled cohort through SecAgg+;
    returns the verdict (:class:`~edgerec.federated.evaluation.EvaluationVerdict` as a
    dict) with the round's cohort, noise, ε and wall time."""
    from edgerec.federated.dp import privatize
    from edgerec.federated.fixedpoint import decode_sum, max_frac_bits
    from edgerec.federated.protocol import RoundParams
    from edgerec.federated.secagg import suggest_graph
    from edgerec.simulation.experiment import cohort_bounds
    from edgerec.simulation.secagg_round import run_secagg_round

    if not np.array_equal(current.owner, candidate.owner):
        raise ValueError("current and candidate metrics must cover the same events")
    started = time.perf_counter()
    devices = np.unique(current.owner)
    q = min(cfg.sampling_rate, cfg.max_cohort / max(1, devices.size))
    cohort, min_cohort, bound = cohort_bounds(int(devices.size), q, cfg.min_cohort_fraction)
    rng = np.random.default_rng([cfg.seed, 17])
    chosen = devices[rng.random(devices.size) < q]
    clip = report_bound(cfg.max_events)
    z = _noise_multiplier(cfg, q)
    info: dict[str, Any] = {
        "sampling_rate": q, "cohort": int(chosen.size), "min_cohort": min_cohort,
        "max_cohort": bound, "max_events": cfg.max_events, "noise_multiplier": z,
        "epsilon": cfg.epsilon, "delta": cfg.delta if cfg.epsilon is not None else None,
    }  # fmt: skip
    if not min_cohort <= chosen.size <= bound:  # the coordinator fails such a round
        return {**info, "decision": "failed", "reason": "cohort outside its bounds"}
    noise_std = z * clip / math.sqrt(min_cohort)
    k, t = suggest_graph(bound, 0.05)
    params = RoundParams.new(
        "fedeval", head_version=0, cohort_target=bound, min_cohort=min_cohort, deadline=0.0,
        clip=clip, noise_multiplier=z, frac_bits=min(24, max_frac_bits(bound, clip, noise_std)),
        vector_length=len(FIELDS), neighbour_degree=k, threshold=t,
    )  # fmt: skip
    by_device = _split_by_owner(current, candidate)
    inputs = {}
    for cid, dev in enumerate(chosen.tolist(), start=1):
        (nc, hc), (nk, hk) = by_device(dev)
        report = device_report(nc, nk, hc, hk, cfg.max_events)
        inputs[cid] = privatize(report, params, rng).values
    secagg = run_secagg_round(params, inputs, wire=False)
    sums = decode_sum(secagg.total, params.frac_bits)
    total_noise = noise_std * math.sqrt(len(secagg.survivors))
    verdict = decide(
        sums,
        cfg.max_events,
        alpha=cfg.alpha,
        min_events=cfg.min_events,
        noise_std=total_noise,
        max_se=cfg.max_se,
    )
    info.update(
        survivors=len(secagg.survivors),
        seconds=round(time.perf_counter() - started, 2),
        client_cpu_ms=round(1000 * float(np.mean(list(secagg.client_cpu_seconds.values()))), 2),
    )
    return {**verdict.to_dict(), **info}


def _noise_multiplier(cfg: FederatedEvalConfig, q: float) -> float:
    if cfg.epsilon is None:
        return 0.0
    from edgerec.federated.accountant import calibrate_noise

    return calibrate_noise(cfg.epsilon, cfg.delta, q, 1) * 1.0001


def _split_by_owner(
    current: EventMetrics, candidate: EventMetrics
) -> Callable[[int], tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """``device -> ((ndcg, hr) current, (ndcg, hr) candidate)``, events in their order."""
    order = np.argsort(current.owner, kind="stable")
    owners, starts = np.unique(current.owner[order], return_index=True)
    ends = np.append(starts[1:], order.size)
    spans = zip(starts.tolist(), ends.tolist(), strict=True)
    bounds = dict(zip(owners.tolist(), spans, strict=True))

    def of(dev: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        lo, hi = bounds[dev]
        idx = order[lo:hi]
        return (current.ndcg[idx], current.hr[idx]), (candidate.ndcg[idx], candidate.hr[idx])

    return of
