"""Publishing a round's result: the unmasked sum becomes the next head version.

The mean update is :func:`edgerec.federated.dp.mean_update` — the same
fixed-denominator mean the simulation applies — over the round's *expected* cohort
(DP-FedAvg): dividing by the number of survivors would make the release depend on
who took part, which the accountant does not cover. The new head, the round's
``done`` state and the (ε, δ) spent are written in one transaction guarded by a
compare-and-set on the round state, so a round is applied at most once however
often the process dies. The head's metadata names the bundle it was trained for
(``model_id``, ``model_version``: the bundle the database is bound to).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edgerec.federated.dp import mean_update
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
from .storage import DONE, FAILED, Head, Round, Storage

log = logging.getLogger(__name__)


class Publisher:
    """Turns an unmasked secure sum into a published head.

    Args:
        storage: the database.
        clock: wall clock in seconds.
        live: the cache of running rounds (the published round's entry is dropped).
    """

    def __init__(self, storage: Storage, clock: Callable[[], float], live: LiveRounds) -> None:
        self.storage = storage
        self.clock = clock
        self.live = live

    def publish(
        self, rnd: Round, params: RoundParams, total: np.ndarray, server: SecAggServer
    ) -> bool:
        """Apply ``server_lr * sum / expected cohort`` to ``global_bias`` and publish the
        new head, the round's end and its (ε, δ); fails the round instead when the head
        moved since it opened. Returns True (the round changed state or was changed)."""
        denominator = int(rnd.params.get("expected_cohort", params.cohort_target))
        # float64, so that adding it to the head rounds to float32 once
        mean = mean_update(total, params, denominator, dtype=np.float64)
        lr = float(rnd.params.get("server_lr", 1.0))
        now = self.clock()
        z, q = params.noise_multiplier, float(rnd.params["sampling_rate"])
        delta = float(rnd.params["delta"])
        with self.storage.write() as tx:
            head = tx.latest_head()
            assert head is not None
            if head.version != rnd.base_version:
                reason = f"head moved from v{rnd.base_version} to v{head.version} during the round"
                tx.update_round(
                    rnd.round_id, rnd.state, state=FAILED, closed_at=now, failure=reason
                )
                self.live.drop(rnd.round_id)
                log.error("round %d failed: %s", rnd.round_id, reason)
                return True
            acc = accountant_for(tx, z, q, delta)
            epsilon = acc.step()
            tails = published_cap_tails(tx) + [float(rnd.params.get("cap_tail", 0.0))]
            extra = cap_delta(tails, epsilon)
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
                "noise_multiplier": z,
                "sampling_rate": q,
                "frac_bits": params.frac_bits,
                "server_lr": lr,
                "denominator": denominator,
                "max_cohort": params.cohort_target,
                "dp": bool(math.isfinite(epsilon)),
                "epsilon": finite_or_none(epsilon),
                "delta": delta,
                "delta_sampling_cap": finite_or_none(extra),
                "delta_total": finite_or_none(delta + extra),
                "dp_rounds": acc.rounds,
                "accountant": ACCOUNTANT,
                "model_id": tx.get_meta("model_id"),
                "model_version": tx.get_meta("model_version"),
                "sha256": hashlib.sha256(bias.astype("<f4").tobytes()).hexdigest(),
            }
            ok = tx.update_round(
                rnd.round_id,
                rnd.state,
                state=DONE,
                closed_at=now,
                result_version=version,
                info=_final_info(rnd, metadata, server),
            )
            if ok:
                tx.insert_head(Head(version, rnd.round_id, now, bias, metadata))
        self.live.drop(rnd.round_id)
        if ok:
            log.info(
                "round %d done: head v%d from %d survivors (%d dropped), epsilon=%s delta=%g",
                rnd.round_id,
                version,
                len(server.survivors),
                len(server.dropped),
                format_epsilon(epsilon),
                delta,
            )
        return True


def _final_info(rnd: Round, metadata: dict[str, Any], server: SecAggServer) -> dict[str, Any]:
    """The round's ``info`` once published: ε and the clients SecAgg caught misbehaving."""
    return {
        **rnd.info,
        "epsilon": metadata["epsilon"],
        "misbehaving": {str(k): v for k, v in server.misbehaving.items()},
    }
