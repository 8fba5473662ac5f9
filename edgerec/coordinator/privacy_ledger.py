"""The privacy spent by published heads: the DP accountant over past rounds and the
cohort-bound tails added to δ.

Only published (``done``) rounds released anything, so only they are accounted:
each one is a Poisson-subsampled Gaussian mechanism with its own noise multiplier
and sampling rate. A round whose sample fell outside its cohort bounds fails and
releases nothing; the probability of that happening (its ``cap_tail``) is added to
δ instead (see :mod:`edgerec.federated.sampling`).
"""

from __future__ import annotations

import math
from typing import Any

from edgerec.federated.accountant import DpAccountant

from .storage import DONE, Head, Transaction

#: how heads name the accounting method in their metadata
ACCOUNTANT = "rdp/poisson-sampled-gaussian (dp-accounting)"
#: list every round (the storage interface pages by a limit)
_ALL_ROUNDS = 1 << 30


def accountant_for(
    tx: Transaction, noise_multiplier: float, sampling_rate: float, delta: float
) -> DpAccountant:
    """An accountant for a next round with ``(z, q)`` that already holds every
    published round."""
    history = []
    for done in reversed(tx.list_rounds(limit=_ALL_ROUNDS, state=DONE)):
        p = done.params
        history.append((float(p["secagg"]["noise_multiplier"]), float(p["sampling_rate"]), 1))
    return DpAccountant(noise_multiplier, sampling_rate, delta, history)


def published_cap_tails(tx: Transaction) -> list[float]:
    """Each published round's probability of a cohort over its bound."""
    return [float(r.params.get("cap_tail", 0.0)) for r in tx.list_rounds(_ALL_ROUNDS, DONE)]


def privacy_spent(head: Head | None) -> dict[str, Any]:
    """(ε, δ) spent by the published heads, from the latest head's metadata."""
    meta = head.metadata if head else {}
    rounds = int(meta.get("dp_rounds", 0))
    return {
        "epsilon": meta.get("epsilon", 0.0) if rounds else 0.0,
        "delta": meta.get("delta"),
        "delta_sampling_cap": meta.get("delta_sampling_cap", 0.0) if rounds else 0.0,
        "delta_total": meta.get("delta_total", meta.get("delta")),
        "rounds": rounds,
        "dp": bool(meta.get("dp", True)),
        "accountant": ACCOUNTANT,
    }


def finite_or_none(x: float) -> float | None:
    """``x`` for JSON: an infinite ε (no noise) is stored as null."""
    return float(x) if math.isfinite(x) else None


def format_epsilon(x: float) -> str:
    """ε for messages and logs (``inf`` without noise)."""
    return f"{x:.4g}" if math.isfinite(x) else "inf"
