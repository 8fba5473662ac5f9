"""Privacy budget accounting for federated rounds (coordinator side).

Each round is a Poisson-sampled Gaussian mechanism: every device of the population joins
with probability ``q = cohort / population`` and the secure sum of the clipped updates
carries Gaussian noise of std ``z * C`` (``z`` the noise multiplier, ``C`` the clip), so
``DpEvent = PoissonSampledDpEvent(q, GaussianDpEvent(z))``, composed over rounds with
Google's ``dp-accounting`` RDP accountant (add-or-remove-one neighbouring relation:
user-level DP, one device = one user). ``dp_accounting`` is imported lazily so this
module imports on a device without it.
"""

from __future__ import annotations

import math
from typing import Any

from edgerec.errors import MissingExtraError

__all__ = ["DpAccountant", "calibrate_noise", "compute_epsilon", "max_rounds"]


def _dp():  # lazy import
    try:
        import dp_accounting
        from dp_accounting import rdp
    except ImportError:  # pragma: no cover - depends on the install
        raise MissingExtraError("coordinator", "dp_accounting") from None
    return dp_accounting, rdp


def _round_event(noise_multiplier: float, sampling_rate: float):
    dp_accounting, _ = _dp()
    if noise_multiplier == 0:
        return dp_accounting.NonPrivateDpEvent()
    gauss = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate >= 1.0:
        return gauss
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, gauss)


def _check(noise_multiplier: float, sampling_rate: float, delta: float | None = None) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be finite and >= 0 (got {noise_multiplier!r})")
    if not (math.isfinite(sampling_rate) and 0 < sampling_rate <= 1):
        raise ValueError(f"sampling_rate must be in (0, 1] (got {sampling_rate!r})")
    if delta is not None and not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1) (got {delta!r})")


def compute_epsilon(
    noise_multiplier: float, sampling_rate: float, rounds: int, delta: float
) -> float:
    """ε after ``rounds`` Poisson-sampled Gaussian rounds (RDP accountant); ``inf`` if z=0."""
    _check(noise_multiplier, sampling_rate, delta)
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0 (got {rounds})")
    if rounds == 0:
        return 0.0
    _, rdp = _dp()
    acc = rdp.RdpAccountant()
    acc.compose(_round_event(noise_multiplier, sampling_rate), rounds)
    return float(acc.get_epsilon(delta))


def calibrate_noise(
    target_epsilon: float, delta: float, sampling_rate: float, rounds: int
) -> float:
    """Smallest noise multiplier ``z`` (to ~1e-6) with ε(z, q, rounds, δ) <= target."""
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target_epsilon must be positive and finite (got {target_epsilon!r})")
    _check(1.0, sampling_rate, delta)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1 (got {rounds})")
    dp_accounting, rdp = _dp()
    z = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda z: dp_accounting.SelfComposedDpEvent(_round_event(z, sampling_rate), rounds),
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-2, 1.0),
    )
    return float(z)


def max_rounds(
    noise_multiplier: float, sampling_rate: float, delta: float, target_epsilon: float
) -> int:
    """Most rounds that keep ε <= ``target_epsilon`` (exponential + binary search)."""
    if compute_epsilon(noise_multiplier, sampling_rate, 1, delta) > target_epsilon:
        return 0
    lo, hi = 1, 2
    while compute_epsilon(noise_multiplier, sampling_rate, hi, delta) <= target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1 << 40:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if compute_epsilon(noise_multiplier, sampling_rate, mid, delta) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    return lo


class DpAccountant:
    """Running (ε, δ) of the published heads.

    Args:
        noise_multiplier: ``z`` of the rounds to come (may be overridden per step).
        sampling_rate: ``q = cohort_target / population``.
        delta: target δ (use ``<= 1 / population``).
        history: previously spent rounds as ``[(z, q, rounds), ...]`` (from
            :meth:`to_json`), to resume after a restart.

    Example::

        acc = DpAccountant(noise_multiplier=1.1, sampling_rate=0.01, delta=1e-5)
        while acc.can_run(target_epsilon=8.0):
            ...  # run a round that succeeded and published
            acc.step()
    """

    def __init__(
        self,
        noise_multiplier: float,
        sampling_rate: float,
        delta: float,
        history: list[tuple[float, float, int]] | None = None,
    ) -> None:
        _check(noise_multiplier, sampling_rate, delta)
        self.noise_multiplier = float(noise_multiplier)
        self.sampling_rate = float(sampling_rate)
        self.delta = float(delta)
        self.history: list[tuple[float, float, int]] = []
        for z, q, n in history or []:
            self._append(float(z), float(q), int(n))
        self._epsilon: float | None = None

    @property
    def rounds(self) -> int:
        """Rounds accounted so far."""
        return sum(n for _, _, n in self.history)

    def _append(self, z: float, q: float, n: int) -> None:
        _check(z, q)
        if n < 1:
            raise ValueError(f"rounds must be >= 1 (got {n})")
        if self.history and self.history[-1][:2] == (z, q):
            self.history[-1] = (z, q, self.history[-1][2] + n)
        else:
            self.history.append((z, q, n))

    def _eps(self, extra: list[tuple[float, float, int]]) -> float:
        events = self.history + extra
        if not events:
            return 0.0
        _, rdp = _dp()
        acc = rdp.RdpAccountant()
        for z, q, n in events:
            acc.compose(_round_event(z, q), n)
        return float(acc.get_epsilon(self.delta))

    def step(
        self,
        rounds: int = 1,
        *,
        noise_multiplier: float | None = None,
        sampling_rate: float | None = None,
    ) -> float:
        """Account ``rounds`` released rounds; returns the new ε."""
        z = self.noise_multiplier if noise_multiplier is None else float(noise_multiplier)
        q = self.sampling_rate if sampling_rate is None else float(sampling_rate)
        self._append(z, q, int(rounds))
        self._epsilon = None
        return self.epsilon

    @property
    def epsilon(self) -> float:
        """ε spent so far at the accountant's δ (0 before any round; inf if any z was 0)."""
        if self._epsilon is None:
            self._epsilon = self._eps([])
        return self._epsilon

    def epsilon_after(self, rounds: int = 1) -> float:
        """ε if ``rounds`` more rounds ran with the current parameters."""
        return self._eps([(self.noise_multiplier, self.sampling_rate, int(rounds))])

    def can_run(self, target_epsilon: float, rounds: int = 1) -> bool:
        """Whether ``rounds`` more rounds keep ε <= ``target_epsilon``."""
        return self.epsilon_after(rounds) <= target_epsilon

    def to_json(self) -> dict[str, Any]:
        """JSON-able state (parameters, δ, history, current ε)."""
        eps = self.epsilon
        return {
            "accountant": "rdp",
            "mechanism": "poisson-sampled-gaussian",
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "delta": self.delta,
            "history": [list(h) for h in self.history],
            "rounds": self.rounds,
            "epsilon": eps if math.isfinite(eps) else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DpAccountant:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(
                data["noise_multiplier"],
                data["sampling_rate"],
                data["delta"],
                [tuple(h) for h in data.get("history", [])],  # type: ignore[misc]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid accountant state: {exc}") from None

    def __repr__(self) -> str:
        return (
            f"DpAccountant(z={self.noise_multiplier}, q={self.sampling_rate}, "
            f"delta={self.delta}, rounds={self.rounds}, epsilon={self.epsilon:.4g})"
        )
