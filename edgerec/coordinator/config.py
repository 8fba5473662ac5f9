"""Settings of the coordinator service and of the rounds it opens."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgerec.config import load
from edgerec.errors import InputError
from edgerec.federated.sampling import DEFAULT_CAP_TAIL

#: request-body limit when the vector is small: covers an EncryptedShares message for
#: MAX_DEGREE neighbours (about 260 bytes of JSON each)
MIN_BODY_BYTES = 128 * 1024
#: largest SecAgg+ neighbour degree a round may use (bounds the share messages)
MAX_DEGREE = 256
#: noise multiplier of a round opened without one: differential privacy is on by default
DEFAULT_NOISE_MULTIPLIER = 1.0
#: the coordinator's default ε ceiling: no round opens whose budget would exceed it
DEFAULT_EPSILON_CEILING = 8.0


@dataclass(frozen=True)
class RoundConfig:
    """What an operator chooses when opening a round (``open-round`` / admin API).

    Attributes:
        cohort_target: expected cohort: devices are sampled with probability
            ``q = cohort_target / population`` (Poisson sampling, as the accountant
            assumes) and the update is divided by it (fixed denominator).
        cohort_tail: the round's cohort bound (secure-aggregation and fixed-point
            sizing) is the smallest ``m`` that a Poisson sample exceeds with
            probability at most this; a round sampled over it fails and releases
            nothing, and the probability is added to δ (``delta_sampling_cap``).
        min_cohort: fewest devices that may be aggregated (also ``m_min`` of the
            distributed noise); fewer by a deadline ends the round ``failed``.
        deadline_s: seconds from opening until uploads must be in.
        phase_timeout_s: longest wait of one phase (default ``deadline_s / 4``); the
            unmask phase gets this long after the upload deadline.
        clip: L2 clipping bound ``C`` of each device's update.
        noise_multiplier: ``z`` (default :data:`DEFAULT_NOISE_MULTIPLIER`; 0 = no
            differential privacy, which an ε ceiling refuses).
        target_epsilon: privacy budget; no round opens that would exceed it (nor the
            server's ``epsilon_ceiling``).
        delta: δ of the (ε, δ) guarantee (default ``min(1e-5, 1 / population)``).
        frac_bits: fixed-point fractional bits (default: the most that cannot overflow).
        neighbour_degree: SecAgg+ degree ``k`` (default: from ``dropout``).
        threshold: Shamir threshold ``t`` (default: majority of ``k``).
        dropout: expected dropout rate the default graph must tolerate.
        server_lr: server learning rate applied to the mean update.
        training: hyper-parameters passed to the devices' ``LocalTrainer``.
    """

    cohort_target: int
    min_cohort: int
    deadline_s: float = 600.0
    phase_timeout_s: float | None = None
    clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    frac_bits: int | None = None
    neighbour_degree: int | None = None
    threshold: int | None = None
    dropout: float = 0.3
    server_lr: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)
    cohort_tail: float = DEFAULT_CAP_TAIL

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise InputError(f"round config: {what}")

        if self.noise_multiplier is None:  # DP on by default
            object.__setattr__(self, "noise_multiplier", DEFAULT_NOISE_MULTIPLIER)
        need(_int(self.cohort_target) and self.cohort_target >= 2, "cohort_target must be >= 2")
        need(
            _int(self.min_cohort) and 2 <= self.min_cohort <= self.cohort_target,
            "min_cohort must be in 2..cohort_target",
        )
        need(_pos(self.deadline_s), "deadline_s must be > 0")
        need(
            self.phase_timeout_s is None or _pos(self.phase_timeout_s),
            "phase_timeout_s must be > 0",
        )
        need(_pos(self.clip), "clip must be > 0")
        need(
            _finite(self.noise_multiplier) and self.noise_multiplier >= 0,
            "noise_multiplier must be >= 0",
        )
        need(self.target_epsilon is None or _pos(self.target_epsilon), "target_epsilon must be > 0")
        need(
            self.delta is None or (_finite(self.delta) and 0 < self.delta < 1),
            "delta must be in (0, 1)",
        )
        need(
            self.frac_bits is None or (_int(self.frac_bits) and 0 <= self.frac_bits <= 30),
            "frac_bits must be in 0..30",
        )
        need(
            self.neighbour_degree is None
            or (
                _int(self.neighbour_degree)
                and self.neighbour_degree >= 2
                and self.neighbour_degree % 2 == 0
                and self.neighbour_degree <= MAX_DEGREE
            ),
            f"neighbour_degree must be an even int in 2..{MAX_DEGREE}",
        )
        need(
            self.threshold is None or (_int(self.threshold) and self.threshold >= 2),
            "threshold must be an int >= 2",
        )
        need(_finite(self.dropout) and 0 <= self.dropout < 1, "dropout must be in [0, 1)")
        need(_pos(self.server_lr), "server_lr must be > 0")
        need(isinstance(self.training, dict), "training must be an object")
        need(
            _finite(self.cohort_tail) and 0 < self.cohort_tail < 0.5,
            "cohort_tail must be in (0, 0.5)",
        )

    @property
    def phase_timeout(self) -> float:
        return float(self.phase_timeout_s or self.deadline_s / 4)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "round config") -> RoundConfig:
        """Build from a JSON object (admin API, ``--auto-round`` file): typed keys, no
        unknown ones (:func:`edgerec.config.load`), then the rules above."""
        return load(cls, data, source)


@dataclass(frozen=True)
class EvaluationConfig:
    """Federated evaluation of every trained head before it is published
    (:mod:`edgerec.federated.evaluation`; ``serve --federated-eval``).

    Attributes:
        max_events: most recent events each device holds out of its training and
            reports on (also the report's bound: the evaluation round's clip).
        alpha: level of the one-sided test "the candidate is worse".
        min_events: fewest held-out events for a decision (fewer: rejected as
            inconclusive).
        max_se: largest standard error of the NDCG@10 difference a decision may rest
            on (larger, e.g. under heavy DP noise: rejected as inconclusive); None: any.
    """

    max_events: int = 5
    alpha: float = 0.05
    min_events: int = 100
    max_se: float | None = None

    def __post_init__(self) -> None:
        if not (_int(self.max_events) and 1 <= self.max_events <= 1000):
            raise InputError(f"evaluation: max_events must be in 1..1000 (got {self.max_events})")
        if not (_finite(self.alpha) and 0 < self.alpha <= 0.5):
            raise InputError(f"evaluation: alpha must be in (0, 0.5] (got {self.alpha})")
        if not (_int(self.min_events) and self.min_events >= 1):
            raise InputError(f"evaluation: min_events must be >= 1 (got {self.min_events})")
        if self.max_se is not None and not _pos(self.max_se):
            raise InputError(f"evaluation: max_se must be > 0 (got {self.max_se})")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one coordinator process.

    Attributes:
        max_body_bytes: request bodies above this are refused with 413 (default:
            enough for one masked vector of the bundle's size, at least 128 KiB).
        device_rate: sustained requests per second per device (token bucket).
        device_burst: bucket size per device.
        anon_rate: requests per second per client address on unauthenticated routes
            (enrollment).
        anon_burst: bucket size per address.
        tick_s: how often the background task checks deadlines.
        default_target_epsilon: budget for rounds opened without ``target_epsilon``.
        default_delta: δ for rounds opened without one.
        auto_round: open rounds with these settings one after the other (``serve
            --auto-round ROUND.json``), until the privacy budget is spent.
        round_interval_s: pause between the end of a round and the next auto round.
        epsilon_ceiling: the most ε any round's budget may reach (default
            :data:`DEFAULT_EPSILON_CEILING`); a request for more is refused with 422
            and rounds without a budget get this one. Only the operator's config sets
            it, never an admin request. None: no ceiling (simulations, benchmarks).
        token_ttl_s: lifetime of a device token.
        token_refresh_s: window before expiry in which devices rotate their token.
        auth_fail_rate: failed authentications per second allowed per client address
            and per claimed device id, after ``auth_fail_burst`` (then 429).
        auth_fail_burst: failed authentications allowed at once.
        audit_shares: check every unmask share against the reconstructed polynomial and
            name the devices that sent bad ones (``misbehaving`` in the round summary);
            a CPU cost per secret (benchmarks/RESULTS.md). Off: bad shares are only
            noticed when they break the first reconstruction (the result is correct
            either way).
        evaluation: evaluate every trained head on the devices before publishing it
            (None: publish each round's result directly).
    """

    max_body_bytes: int | None = None
    device_rate: float = 5.0
    device_burst: int = 60
    anon_rate: float = 2.0
    anon_burst: int = 20
    tick_s: float = 0.5
    default_target_epsilon: float | None = None
    default_delta: float | None = None
    auto_round: RoundConfig | None = None
    round_interval_s: float = 0.0
    audit_shares: bool = True
    epsilon_ceiling: float | None = DEFAULT_EPSILON_CEILING
    token_ttl_s: float = 30 * 86400.0
    token_refresh_s: float = 7 * 86400.0
    auth_fail_rate: float = 0.2
    auth_fail_burst: int = 10
    evaluation: EvaluationConfig | None = None

    def __post_init__(self) -> None:
        ceiling = self.epsilon_ceiling
        if ceiling is not None and not _pos(ceiling):
            raise InputError(f"server config: epsilon_ceiling must be > 0 (got {ceiling})")
        target = self.default_target_epsilon
        if target is not None and ceiling is not None and target > ceiling:
            raise InputError(
                f"server config: default target epsilon {target} exceeds the epsilon "
                f"ceiling {ceiling}"
            )
        if not (_pos(self.token_ttl_s) and _pos(self.token_refresh_s)):
            raise InputError("server config: token_ttl_s and token_refresh_s must be > 0")
        if self.token_refresh_s >= self.token_ttl_s:
            raise InputError(
                "server config: token_refresh_s must be shorter than token_ttl_s "
                f"({self.token_refresh_s} >= {self.token_ttl_s})"
            )

    def body_limit(self, vector_length: int) -> int:
        """The request-body limit for a model whose update has ``vector_length`` values."""
        if self.max_body_bytes is not None:
            return int(self.max_body_bytes)
        masked = 4 * ((4 * vector_length + 2) // 3) + 1024  # base64 of uint32[n] + envelope
        return max(MIN_BODY_BYTES, masked)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _pos(v: Any) -> bool:
    return _finite(v) and v > 0
