"""Opening a round: the privacy-budget check, the cohort bounds, the SecAgg graph and
the sampled cohort.

Poisson sampling is never truncated: a sample outside ``[min_cohort, bound]`` fails
the round (nothing released) and the probability of that is added to δ
(:mod:`edgerec.federated.sampling`). The cohort is drawn here, once, from a fresh
round secret (:mod:`.cohort_sampling`); a round whose draw is out of bounds is failed
before any device learns it was selected.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from edgerec.federated import wire
from edgerec.federated.dp import device_noise_std
from edgerec.federated.errors import ProtocolError
from edgerec.federated.evaluation import FIELDS, report_bound
from edgerec.federated.fixedpoint import max_frac_bits
from edgerec.federated.protocol import RoundParams
from edgerec.federated.sampling import cap_delta, max_cohort, min_cohort_for, round_tail
from edgerec.federated.secagg import suggest_graph

from . import errors
from .cohort_sampling import count_sampled
from .config import MAX_DEGREE, EvaluationConfig, RoundConfig, ServerConfig
from .privacy_ledger import accountant_for, finite_or_none, format_epsilon
from .publishing import EVALUATE
from .round_state import load_round
from .storage import PHASES, REJECTED, Head, Round, Storage, Transaction

log = logging.getLogger(__name__)

#: finest fixed-point precision a round uses when the operator does not choose one
MAX_AUTO_FRAC_BITS = 24


@dataclass(frozen=True)
class SamplingPlan:
    """How a round samples its cohort and what that costs in privacy.

    Attributes:
        population: enrolled devices.
        sampling_rate: ``q``, each device's probability of selection.
        delta: δ of the round's (ε, δ).
        target_epsilon: the privacy budget, if any.
        epsilon_after: ε spent once this round is published.
        bound: the cohort bound (SecAgg and fixed-point sizing).
        cap_tail: probability that a sample falls outside ``[min_cohort, bound]``.
    """

    population: int
    sampling_rate: float
    delta: float
    target_epsilon: float | None
    epsilon_after: float
    bound: int
    cap_tail: float


class RoundOpener:
    """Opens rounds for the current head version.

    Args:
        storage: the database.
        vector_length: values per update (the bundle's catalog size).
        config: defaults for privacy parameters.
        clock: wall clock in seconds.
        lock: the engine's lock over the in-memory SecAgg state.
        fail: ends a round as failed (for a cohort sampled out of bounds).
    """

    def __init__(
        self,
        storage: Storage,
        vector_length: int,
        config: ServerConfig,
        clock: Callable[[], float],
        lock: threading.RLock,
        fail: Callable[[Round, str], bool],
    ) -> None:
        self.storage = storage
        self.vector_length = vector_length
        self.config = config
        self.clock = clock
        self.lock = lock
        self.fail = fail

    def open(self, cfg: RoundConfig) -> Round:
        """Open a round (see :meth:`~.rounds.RoundEngine.open_round`)."""
        now = self.clock()
        with self.lock, self.storage.write() as tx:
            head, population = _check_can_open(tx, cfg)
            evaluation = self._evaluation(tx, head)
            cfg, vector_length = self._shape(cfg, evaluation)
            plan = self._plan_sampling(tx, cfg, population)
            frac_bits = _frac_bits(cfg, plan.bound)
            k, t = _graph(cfg, plan.bound)
            latest = tx.latest_round()
            number = (latest.round_id + 1) if latest else 1
            instance = tx.get_meta("instance") or "edgerec"
            deadline = now + cfg.deadline_s
            try:
                params = RoundParams.new(
                    f"{instance}-{number}",
                    head_version=head.version,
                    cohort_target=plan.bound,
                    min_cohort=cfg.min_cohort,
                    deadline=deadline,
                    clip=float(cfg.clip),
                    noise_multiplier=float(cfg.noise_multiplier),
                    frac_bits=int(frac_bits),
                    vector_length=vector_length,
                    neighbour_degree=k,
                    threshold=t,
                )
            except ProtocolError as exc:
                raise errors.invalid(f"round parameters: {exc}", field=exc.field) from None
            seed = os.urandom(32)
            selected = count_sampled(seed, tx.device_ids_enrolled_by(now), plan.sampling_rate)
            rnd = Round(
                round_id=0,
                base_version=head.version,
                state=PHASES[0],
                params=_stored_params(params, cfg, plan, selected, evaluation),
                seed=seed,
                opened_at=now,
                deadline=deadline,
                phase_deadline=min(now + cfg.phase_timeout, deadline),
            )
            round_id = tx.insert_round(rnd)
            if round_id != number:
                raise RuntimeError(f"round id {round_id} != expected {number}")
            created = tx.get_round(round_id)
        assert created is not None
        bound = plan.bound
        if selected > bound or selected < cfg.min_cohort:
            # decided before any device is told it was selected; nothing is released
            why = "more" if selected > bound else "fewer"
            limit = bound if selected > bound else cfg.min_cohort
            self.fail(
                created,
                f"{selected} devices were sampled, {why} than "
                f"{'the cohort bound' if selected > bound else 'min_cohort'} {limit}",
            )
            with self.storage.read() as tx:
                return load_round(tx, round_id)
        log.info(
            "opened round %d (%s) on head v%d: %d sampled (expected %d, min %d, bound %d), "
            "k=%d t=%d f=%d, z=%g C=%g, q=%.4g",
            round_id,
            params.round_id,
            head.version,
            selected,
            cfg.cohort_target,
            cfg.min_cohort,
            bound,
            k,
            t,
            frac_bits,
            cfg.noise_multiplier,
            cfg.clip,
            plan.sampling_rate,
        )
        return created

    def _shape(
        self, cfg: RoundConfig, evaluation: dict[str, Any] | None
    ) -> tuple[RoundConfig, int]:
        """The round's settings and update length: an evaluation round's report (its
        clip bounds an honest report) or, with federated evaluation on, a training
        round whose devices keep their recent events out of training."""
        if evaluation is not None:
            clip = report_bound(evaluation["max_events"])
            return replace(cfg, clip=clip, frac_bits=None, training={}), len(FIELDS)
        if self.config.evaluation is not None:
            holdout = {"holdout_events": self.config.evaluation.max_events}
            cfg = replace(cfg, training={**cfg.training, **holdout})
        return cfg, self.vector_length

    def _evaluation(self, tx: Transaction, head: Head) -> dict[str, Any] | None:
        """What the next round evaluates: the pending candidate (None: it trains). A
        candidate trained from another head than the current one is rejected here."""
        cand = tx.pending_candidate()
        if cand is None:
            return None
        if cand.base_version != head.version:
            reason = f"trained from v{cand.base_version}; the head is v{head.version}"
            tx.decide_candidate(
                cand.round_id, REJECTED, None, self.clock(), {"decision": "stale", "reason": reason}
            )
            log.warning("candidate of round %d rejected: %s", cand.round_id, reason)
            return None
        settings = self.config.evaluation or EvaluationConfig()  # decide what is pending
        return {
            "candidate": cand.round_id,
            "candidate_sha256": cand.metadata.get("sha256"),
            "max_events": settings.max_events,
            "alpha": settings.alpha,
            "min_events": settings.min_events,
            "max_se": settings.max_se,
        }

    def _plan_sampling(self, tx: Transaction, cfg: RoundConfig, population: int) -> SamplingPlan:
        """The sampling rate, δ and cohort bound; refuses a round that would exceed the
        privacy budget or whose cohort bounds would cost too much δ."""
        q = min(1.0, cfg.cohort_target / population)
        delta = cfg.delta or self.config.default_delta or min(1e-5, 1.0 / population)
        target = _budget(cfg, self.config)
        acc = accountant_for(tx, cfg.noise_multiplier, q, delta)
        eps_after = acc.epsilon_after(1)
        if target is not None and not eps_after <= target:
            spent = acc.epsilon
            raise errors.conflict(
                f"privacy budget exhausted: one more round (z={cfg.noise_multiplier}, "
                f"q={q:.4g}) would spend epsilon={format_epsilon(eps_after)} > target "
                f"{target} at delta={delta:g} (spent so far: {format_epsilon(spent)} over "
                f"{acc.rounds} rounds; this coordinator's epsilon ceiling is "
                f"{self.config.epsilon_ceiling})",
                code=wire.E_BUDGET,
                epsilon=finite_or_none(spent),
                epsilon_after=finite_or_none(eps_after),
                target_epsilon=target,
            )
        bound = min(max_cohort(population, q, cfg.cohort_tail), population)
        bound = max(cfg.cohort_target, bound)
        tail = round_tail(population, q, cfg.min_cohort, bound)
        cost = cap_delta([tail], target if target is not None else 0.0)
        if cfg.noise_multiplier > 0 and cost > delta / 100:
            raise errors.invalid(
                f"min_cohort {cfg.min_cohort} is too close to the expected cohort "
                f"{cfg.cohort_target}: a Poisson sample falls outside [{cfg.min_cohort}, "
                f"{bound}] with probability {tail:.2g}, which would add {cost:.2g} to "
                f"delta={delta:g} per round; use min_cohort <= "
                f"{min_cohort_for(population, q, cfg.cohort_tail)}",
                field="min_cohort",
            )
        return SamplingPlan(population, q, delta, target, eps_after, bound, tail)


def _budget(cfg: RoundConfig, config: ServerConfig) -> float | None:
    """The round's ε budget: asked for, else the server's default, never above the
    server's ceiling (a request for more is refused: the ceiling is not negotiable)."""
    ceiling = config.epsilon_ceiling
    if ceiling is not None and cfg.target_epsilon is not None and cfg.target_epsilon > ceiling:
        raise errors.invalid(
            f"target_epsilon {cfg.target_epsilon} exceeds this coordinator's epsilon "
            f"ceiling {ceiling} (set in the server's configuration; no request can raise it)",
            field="target_epsilon",
            epsilon_ceiling=ceiling,
        )
    target = cfg.target_epsilon or config.default_target_epsilon
    if ceiling is not None:
        target = ceiling if target is None else min(target, ceiling)
    return target


def _stored_params(
    params: RoundParams,
    cfg: RoundConfig,
    plan: SamplingPlan,
    selected: int,
    evaluation: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a round records about how it was opened (``Round.params``); an evaluation
    round also its ``task`` and what it evaluates."""
    task = {"task": EVALUATE, "evaluation": evaluation} if evaluation is not None else {}
    return {
        **task,
        "secagg": params.to_wire(),
        "config": cfg.to_json(),
        "population": plan.population,
        "sampling_rate": plan.sampling_rate,
        "expected_cohort": cfg.cohort_target,
        "max_cohort": plan.bound,
        "cap_tail": plan.cap_tail,
        "selected": selected,
        "delta": plan.delta,
        "target_epsilon": plan.target_epsilon,
        "epsilon_after": finite_or_none(plan.epsilon_after),
        "phase_timeout_s": cfg.phase_timeout,
        "server_lr": cfg.server_lr,
        "training": cfg.training,
    }


def _check_can_open(tx: Transaction, cfg: RoundConfig) -> tuple[Head, int]:
    """The head a new round starts from and the enrolled population; 409 when a round
    is running, nothing is published yet, or too few devices are enrolled."""
    active = tx.active_round()
    if active is not None:
        raise errors.conflict(
            f"round {active.round_id} is still {active.state}; abort it or wait",
            code=wire.E_ROUND_ACTIVE,
        )
    head = tx.latest_head()
    if head is None:
        raise errors.conflict("the coordinator has no head version (not initialised)")
    population = tx.count_devices()
    if population < cfg.min_cohort:
        raise errors.conflict(
            f"only {population} devices are enrolled; min_cohort is {cfg.min_cohort}"
        )
    return head, population


def _frac_bits(cfg: RoundConfig, bound: int) -> int:
    """Fixed-point fractional bits: given, or the most a sum of ``bound`` clipped,
    noised updates cannot overflow."""
    noise_std = device_noise_std(cfg.clip, cfg.noise_multiplier, cfg.min_cohort)
    if cfg.frac_bits is not None:
        return cfg.frac_bits
    frac_bits = min(MAX_AUTO_FRAC_BITS, max_frac_bits(bound, cfg.clip, noise_std))
    if frac_bits < 0:
        raise errors.invalid(
            "no fixed-point precision fits this cohort, clip and noise: lower "
            "the clip, the noise multiplier or the cohort target"
        )
    return frac_bits


def _graph(cfg: RoundConfig, cohort: int) -> tuple[int, int]:
    """SecAgg+ degree and threshold for a cohort of up to ``cohort`` devices: given, or
    suggested for the expected dropout."""
    if cfg.neighbour_degree is not None:
        k = cfg.neighbour_degree
        return k, cfg.threshold or k // 2 + 1
    try:
        k, t = suggest_graph(cohort, cfg.dropout)
    except ValueError:  # small cohort: the complete graph
        k = cohort - 1 + (cohort - 1) % 2
        t = k // 2 + 1
    if k > MAX_DEGREE:
        raise errors.invalid(f"suggested neighbour degree {k} > {MAX_DEGREE}; set it explicitly")
    return k, cfg.threshold or t
