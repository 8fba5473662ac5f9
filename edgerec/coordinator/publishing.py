"""Publishing a round's result: the unmasked sum becomes the next head version — or,
with federated evaluation on, a candidate that an evaluation round then decides.

The mean update is :func:`edgerec.federated.dp.mean_update` — the same
fixed-denominator mean the simulation applies — over the round's *expected* cohort
(DP-FedAvg): dividing by the number of survivors would make the release depend on
who took part, which the accountant does not cover. The new head, the round's
``done`` state and the (ε, δ) spent are written in one transaction guarded by a
compare-and-set on the round state, so a round is applied at most once however
often the process dies. The head's metadata names the bundle it was trained for
(``model_id``, ``model_version``: the bundle the database is bound to).

**Federated evaluation** (``ServerConfig.evaluation``): a training round's result is
stored as a *candidate* instead; the next round is an evaluation round in which
sampled devices report, through the same secure sum, how the candidate and the current
head rank their held-out recent events (:mod:`edgerec.federated.evaluation`). Its
unmasked sum decides the candidate: published as the next head (its metadata records
the evaluation) or rejected. An evaluation round is a release like any other: the
accountant counts it, and its (ε, δ) is in the round's ``info`` and in the next head.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edgerec.federated.dp import mean_update
from edgerec.federated.evaluation import PUBLISH, decide
from edgerec.federated.fixedpoint import decode_sum
from edgerec.federated.protocol import RoundParams
from edgerec.federated.sampling import cap_delta
from edgerec.federated.secagg import SecAggServer

from .live_rounds import LiveRounds
from .privacy_ledger import (
    ACCOUNTANT,
    accountant_for,
    finite_or_none,
    format_epsilon,
    published_cap_tails,
)
from .storage import (
    DONE,
    FAILED,
    PENDING,
    PUBLISHED,
    REJECTED,
    Candidate,
    Head,
    Round,
    Storage,
    Transaction,
)

log = logging.getLogger(__name__)

#: ``Round.params["task"]`` of an evaluation round (training rounds have none)
EVALUATE = "evaluate"


class Publisher:
    """Turns an unmasked secure sum into a published head (or a candidate, or the
    decision on one).

    Args:
        storage: the database.
        clock: wall clock in seconds.
        live: the cache of running rounds (the published round's entry is dropped).
        evaluate: keep each training round's head as a candidate for a federated
            evaluation instead of publishing it.
    """

    def __init__(
        self, storage: Storage, clock: Callable[[], float], live: LiveRounds, evaluate: bool = False
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.live = live
        self.evaluate = evaluate

    def publish(
        self, rnd: Round, params: RoundParams, total: np.ndarray, server: SecAggServer
    ) -> bool:
        """Apply ``server_lr * sum / expected cohort`` to ``global_bias`` and publish the
        new head (or store it as a candidate), the round's end and its (ε, δ); decide the
        candidate instead when ``rnd`` is an evaluation round. Fails the round when the
        head moved since it opened. Returns True (the round changed state or was changed)."""
        if rnd.params.get("task") == EVALUATE:
            return self._decide(rnd, params, total, server)
        denominator = int(rnd.params.get("expected_cohort", params.cohort_target))
        # float64, so that adding it to the head rounds to float32 once
        mean = mean_update(total, params, denominator, dtype=np.float64)
        lr = float(rnd.params.get("server_lr", 1.0))
        now = self.clock()
        with self.storage.write() as tx:
            head = self._head_or_fail(tx, rnd, now)
            if head is None:
                return True
            privacy = _privacy_after(tx, rnd, params)
            bias = (head.global_bias.astype(np.float64) + lr * mean).astype(np.float32)
            version = head.version + 1
            metadata = {
                "version": version,
                "base_version": head.version,
                "round_id": rnd.round_id,
                "round_name": params.round_id,
                "created_at": now,
                "cohort": len(server.roster),
                "survivors": len(server.survivors),
                "dropped": len(server.dropped),
                "clip": params.clip,
                "noise_multiplier": params.noise_multiplier,
                "sampling_rate": float(rnd.params["sampling_rate"]),
                "frac_bits": params.frac_bits,
                "server_lr": lr,
                "denominator": denominator,
                "max_cohort": params.cohort_target,
                **privacy,
                "model_id": tx.get_meta("model_id"),
                "model_version": tx.get_meta("model_version"),
                "sha256": _sha256(bias),
            }
            info = _final_info(rnd, privacy, server)
            if self.evaluate:
                info["candidate"] = True
            ok = tx.update_round(
                rnd.round_id,
                rnd.state,
                state=DONE,
                closed_at=now,
                result_version=None if self.evaluate else version,
                info=info,
            )
            if ok and self.evaluate:
                tx.insert_candidate(Candidate(rnd.round_id, head.version, now, bias, metadata))
            elif ok:
                tx.insert_head(Head(version, rnd.round_id, now, bias, metadata))
        self.live.drop(rnd.round_id)
        if ok:
            log.info(
                "round %d done: %s v%d from %d survivors (%d dropped), epsilon=%s delta=%g",
                rnd.round_id,
                "candidate head" if self.evaluate else "head",
                version,
                len(server.survivors),
                len(server.dropped),
                format_epsilon(privacy["epsilon"] if privacy["dp"] else math.inf),
                privacy["delta"],
            )
        return True

    def _decide(
        self, rnd: Round, params: RoundParams, total: np.ndarray, server: SecAggServer
    ) -> bool:
        """An evaluation round's sum -> publish or reject its candidate."""
        spec = rnd.params["evaluation"]
        noise_std = params.device_noise_std * math.sqrt(len(server.survivors))
        verdict = decide(
            decode_sum(total, params.frac_bits),
            int(spec["max_events"]),
            alpha=float(spec["alpha"]),
            min_events=int(spec["min_events"]),
            noise_std=noise_std,
            max_se=spec.get("max_se"),
        )
        now = self.clock()
        with self.storage.write() as tx:
            head = self._head_or_fail(tx, rnd, now)
            if head is None:
                return True
            cand = tx.get_candidate(int(spec["candidate"]))
            if cand is None or cand.state != PENDING or cand.base_version != head.version:
                why = "is no longer pending" if cand is not None else "does not exist"
                if cand is not None and cand.state == PENDING:
                    why = f"was trained from v{cand.base_version}, the head is v{head.version}"
                self._fail(tx, rnd, now, f"candidate of round {spec['candidate']} {why}")
                return True
            privacy = _privacy_after(tx, rnd, params)
            record = {
                **verdict.to_dict(),
                "evaluation_round": rnd.round_id,
                "candidate_round": cand.round_id,
                "cohort": len(server.roster),
                "survivors": len(server.survivors),
                "sampling_rate": float(rnd.params["sampling_rate"]),
                "noise_multiplier": params.noise_multiplier,
                "decided_at": now,
            }
            publish = verdict.decision == PUBLISH
            version = head.version + 1
            ok = tx.update_round(
                rnd.round_id,
                rnd.state,
                state=DONE,
                closed_at=now,
                result_version=version if publish else None,
                info={**_final_info(rnd, privacy, server), "evaluation": record},
            )
            if ok:
                tx.decide_candidate(
                    cand.round_id, PUBLISHED if publish else REJECTED, rnd.round_id, now, record
                )
            if ok and publish:
                metadata = {
                    **cand.metadata,
                    **privacy,  # the evaluation round is a release too
                    "version": version,
                    "base_version": head.version,
                    "created_at": now,
                    "evaluation": record,
                }
                tx.insert_head(Head(version, cand.round_id, now, cand.global_bias, metadata))
        self.live.drop(rnd.round_id)
        if ok:
            log.info(
                "round %d: candidate of round %d %s (%s)",
                rnd.round_id,
                cand.round_id,
                f"published as head v{version}" if publish else "rejected",
                verdict.reason,
            )
        return True

    def _head_or_fail(self, tx: Transaction, rnd: Round, now: float) -> Head | None:
        """The current head; None (and the round failed) when it moved since ``rnd`` opened."""
        head = tx.latest_head()
        assert head is not None
        if head.version == rnd.base_version:
            return head
        moved = f"head moved from v{rnd.base_version} to v{head.version} during the round"
        self._fail(tx, rnd, now, moved)
        return None

    def _fail(self, tx: Transaction, rnd: Round, now: float, reason: str) -> None:
        tx.update_round(rnd.round_id, rnd.state, state=FAILED, closed_at=now, failure=reason)
        self.live.drop(rnd.round_id)
        log.error("round %d failed: %s", rnd.round_id, reason)


def _privacy_after(tx: Transaction, rnd: Round, params: RoundParams) -> dict[str, Any]:
    """(ε, δ) spent once ``rnd`` is released, over every released round before it."""
    z, q = params.noise_multiplier, float(rnd.params["sampling_rate"])
    delta = float(rnd.params["delta"])
    acc = accountant_for(tx, z, q, delta)
    epsilon = acc.step()
    tails = published_cap_tails(tx) + [float(rnd.params.get("cap_tail", 0.0))]
    extra = cap_delta(tails, epsilon)
    return {
        "dp": bool(math.isfinite(epsilon)),
        "epsilon": finite_or_none(epsilon),
        "delta": delta,
        "delta_sampling_cap": finite_or_none(extra),
        "delta_total": finite_or_none(delta + extra),
        "dp_rounds": acc.rounds,
        "accountant": ACCOUNTANT,
    }


def _final_info(rnd: Round, privacy: dict[str, Any], server: SecAggServer) -> dict[str, Any]:
    """The round's ``info`` once released: its (ε, δ) and the clients SecAgg caught
    misbehaving."""
    return {
        **rnd.info,
        **privacy,
        "misbehaving": {str(k): v for k, v in server.misbehaving.items()},
    }


def _sha256(bias: np.ndarray) -> str:
    return hashlib.sha256(bias.astype("<f4").tobytes()).hexdigest()
