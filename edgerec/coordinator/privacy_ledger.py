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

from .storage import DONE, Transaction

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


def privacy_spent(meta: dict[str, Any]) -> dict[str, Any]:
    """(ε, δ) spent by the released rounds, from the metadata of the latest release
    (a head's, or an evaluation round's ``info``)."""
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


class DeviceLedger:
    """ε spent by each device: the accountant over the released rounds whose sum holds
    that device's upload (it uploaded and the round ended ``done``: a head, a candidate
    or a federated evaluation), each with its own noise multiplier and sampling rate, at
    the smallest δ among them.

    This is the privacy loss of the releases that carry the device's data; the
    sampling amplification it includes rests on the sample being secret from everyone
    but the device. Results are cached per round history (devices that took part in
    the same rounds share one computation).
    """

    def __init__(self, max_cached: int = 4096) -> None:
        self._cache: dict[tuple, float] = {}
        self._max = max_cached

    def epsilon(self, rounds: list[tuple[float, float, float]]) -> float:
        """ε of ``[(z, q, δ), ...]`` (0 for no rounds; inf when any z is 0)."""
        if not rounds:
            return 0.0
        key = tuple(sorted(rounds))
        if key not in self._cache:
            if len(self._cache) >= self._max:
                self._cache.clear()
            delta = min(d for _, _, d in rounds)
            history = [(z, q, 1) for z, q, _ in rounds]
            z0, q0, _ = rounds[0]
            self._cache[key] = DpAccountant(z0, q0, delta, history).epsilon
        return self._cache[key]

    def report(self, tx: Transaction, device_id: str | None = None) -> dict[str, dict[str, Any]]:
        """``{device_id: {"epsilon", "delta", "rounds", "round_ids"}}`` for every device
        with a published round (only ``device_id`` when given)."""
        per_device: dict[str, list[int]] = {}
        for dev, rnd in tx.participation(device_id):
            per_device.setdefault(dev, []).append(rnd)
        params: dict[int, tuple[float, float, float]] = {}
        out: dict[str, dict[str, Any]] = {}
        for dev, round_ids in per_device.items():
            for rid in round_ids:
                if rid not in params:
                    rnd = tx.get_round(rid)
                    assert rnd is not None
                    p = rnd.params
                    params[rid] = (
                        float(p["secagg"]["noise_multiplier"]),
                        float(p["sampling_rate"]),
                        float(p.get("delta") or 1e-5),
                    )
            rounds = [params[r] for r in round_ids]
            out[dev] = {
                "epsilon": finite_or_none(self.epsilon(rounds)),
                "delta": min(d for _, _, d in rounds),
                "rounds": len(round_ids),
                "round_ids": round_ids,
            }
        return out


def ledger_summary(report: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fleet-wide view of a :meth:`DeviceLedger.report`: how many devices spent
    anything, and the largest ε any one device spent (None: unbounded, a round without
    noise)."""
    eps = [r["epsilon"] for r in report.values()]
    return {
        "devices_with_spend": len(report),
        "max_device_epsilon": None if None in eps else (max(eps) if eps else 0.0),
    }
