"""The device's privacy ledger: which published rounds hold this device's update, and
the ε they cost it (``state_dir/privacy.json``).

The device records a round when its masked update is accepted, and marks it published
or failed when it sees how the round ended. The ε is the coordinator's per-device
accountant figure (sent with a published round the device took part in); where the
device has the accountant installed (``dp-accounting``, not part of
``edgerec[runtime]``) it also recomputes ε itself from the rounds' public parameters
(``epsilon_local``), so it need not take the coordinator's word for it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from edgerec.federated.protocol import RoundParams

from .sync_state import DeviceState

log = logging.getLogger(__name__)

__all__ = ["PrivacyLedger"]

LEDGER = "privacy.json"


def _epsilon(value: Any) -> float | None:
    """A reported ε: a finite number >= 0, or None for "unbounded" (ValueError otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"epsilon {value!r} is not a number >= 0")
    if not math.isfinite(value):
        raise ValueError(f"epsilon {value!r} is not finite")
    return float(value)


def local_epsilon(rounds: list[dict[str, Any]]) -> float | None:
    """ε of the published ``rounds`` by this device's own accountant (None when the
    accountant is not installed or a round lacks its parameters)."""
    try:
        import dp_accounting  # noqa: F401

        from edgerec.federated.accountant import DpAccountant
    except ImportError:
        return None
    try:
        history = [(float(r["noise_multiplier"]), float(r["sampling_rate"]), 1) for r in rounds]
        delta = min(float(r["delta"]) for r in rounds)
        z, q, _ = history[0]
        eps = DpAccountant(z, q, delta, history).epsilon
    except (KeyError, TypeError, ValueError):
        return None
    return float(eps) if math.isfinite(eps) else None


class PrivacyLedger:
    """Reads and updates ``privacy.json`` in the device's state folder."""

    def __init__(self, state: DeviceState) -> None:
        self.state = state

    def load(self) -> dict[str, Any]:
        data = self.state.read_json(LEDGER) or {}
        data.setdefault("rounds", {})
        data.setdefault("epsilon", 0.0)
        return data

    def uploaded(self, rnd: int, params: RoundParams, view: dict[str, Any]) -> None:
        """Record that round ``rnd`` accepted this device's masked update."""
        data = self.load()
        data["rounds"][str(rnd)] = {
            "name": params.round_id,
            "noise_multiplier": params.noise_multiplier,
            "clip": params.clip,
            "min_cohort": params.min_cohort,
            "sampling_rate": view.get("sampling_rate"),
            "delta": view.get("delta"),
            "state": "uploaded",
        }
        self.state.write_json(LEDGER, data)

    def round_ended(self, view: dict[str, Any]) -> None:
        """Mark a recorded round published (``done``) or ``failed``; take the
        coordinator's per-device ε from a published one."""
        data = self.load()
        entry = data["rounds"].get(str(view.get("round")))
        if entry is None or entry.get("name") != view.get("name"):
            return
        state = "published" if view.get("state") == "done" else "failed"
        if entry["state"] == state:
            return
        entry["state"] = state
        mine = view.get("my_privacy")
        if state == "published" and isinstance(mine, dict):
            try:
                data["epsilon"] = _epsilon(mine.get("epsilon"))
            except ValueError as exc:
                log.warning("ignoring the coordinator's privacy report: %s", exc)
        published = [r for r in data["rounds"].values() if r.get("state") == "published"]
        data["epsilon_local"] = local_epsilon(published) if published else 0.0
        self.state.write_json(LEDGER, data)

    def pending_rounds(self) -> list[int]:
        """Rounds that hold this device's update but whose end it has not seen yet."""
        rounds = self.load()["rounds"]
        return sorted(int(r) for r, e in rounds.items() if e.get("state") == "uploaded")

    def forget(self, rnd: int) -> None:
        """Drop a round the coordinator no longer knows (another database)."""
        data = self.load()
        if data["rounds"].pop(str(rnd), None) is not None:
            self.state.write_json(LEDGER, data)

    def summary(self) -> tuple[float | None, int]:
        """``(ε, published rounds)`` for the sync report (the larger of the
        coordinator's and the device's own figure when both are known)."""
        data = self.load()
        published = sum(1 for r in data["rounds"].values() if r.get("state") == "published")
        eps, local = data.get("epsilon"), data.get("epsilon_local")
        if published and eps is None and local is None:
            return None, published
        known = [e for e in (eps, local) if isinstance(e, int | float)]
        return (max(known) if known else 0.0), published
