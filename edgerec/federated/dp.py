"""Distributed Gaussian noise and the device-side privatisation pipeline.

Variant: **distributed DP inside the secure sum**. Each device adds Gaussian noise of
standard deviation ``z * C / sqrt(m_min)`` per coordinate to its clipped update, where
``m_min`` is the round's minimum cohort. The secure sum of ``m >= m_min`` devices then
carries Gaussian noise of standard deviation ``z * C * sqrt(m / m_min) >= z * C``, which
is the Gaussian mechanism with sensitivity ``C`` (user level: one clipped update per
device per round) and noise multiplier ``z``, accounted for by
:class:`edgerec.federated.accountant.DpAccountant`.

Assumptions (stated in ``docs/federated-protocol.md``): the coordinator sees only the
secure sum (SecAgg), never an individual noised update; at least ``m_min`` honest
(non-colluding) devices survive to the unmask phase (the SecAgg server refuses to unmask
fewer, and so do honest clients); noise is floating-point Gaussian rounded to the
fixed-point grid (the rigorous version is the distributed discrete Gaussian of Kairouz
et al. 2021, not implemented); devices clamp each noised coordinate at
``TAIL_SIGMAS`` standard deviations (probability ``< 1e-22`` per coordinate).
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from edgerec.federated.clipping import clip_l2
from edgerec.federated.fixedpoint import coordinate_bound, decode_sum, encode

if TYPE_CHECKING:
    from edgerec.federated.protocol import RoundParams

__all__ = [
    "PrivateUpdate",
    "add_distributed_noise",
    "device_noise_std",
    "mean_update",
    "privatize",
]


def device_noise_std(clip: float, noise_multiplier: float, min_cohort: int) -> float:
    """Per-device, per-coordinate noise std: ``z * C / sqrt(m_min)``."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be finite and >= 0 (got {noise_multiplier!r})")
    if not (isinstance(min_cohort, int) and min_cohort >= 1):
        raise ValueError(f"min_cohort must be a positive int (got {min_cohort!r})")
    return float(noise_multiplier * clip / math.sqrt(min_cohort))


def add_distributed_noise(
    x: np.ndarray,
    clip: float,
    noise_multiplier: float,
    min_cohort: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Return ``x + N(0, (z*C)^2 / m_min)`` per coordinate (a new float64 array).

    Args:
        x: the clipped update.
        clip: L2 bound ``C``.
        noise_multiplier: ``z`` (0 disables noise).
        min_cohort: ``m_min``, the fewest devices whose sum the coordinator may see.
        rng: numpy generator; by default a fresh one seeded from the OS CSPRNG.
    """
    std = device_noise_std(clip, noise_multiplier, min_cohort)
    arr = np.asarray(x, dtype=np.float64)
    if std == 0.0:
        return arr.copy()
    gen = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    return arr + gen.normal(0.0, std, size=arr.shape)


class PrivateUpdate(NamedTuple):
    """Result of :func:`privatize`.

    Attributes:
        values: uint32 fixed-point encoding, ready for SecAgg masking.
        norm: L2 norm of the update before clipping.
        clipped: whether clipping scaled the update down.
    """

    values: np.ndarray
    norm: float
    clipped: bool


def privatize(
    delta: np.ndarray, params: RoundParams, rng: np.random.Generator | None = None
) -> PrivateUpdate:
    """Device pipeline: clip to ``params.clip`` -> distributed noise -> clamp -> fixed point.

    Args:
        delta: the float update (``vector_length`` values).
        params: the round's parameters.
        rng: noise generator (default: seeded from the OS CSPRNG).

    Raises:
        ValueError: wrong length or non-finite values.
    """
    arr = np.asarray(delta, dtype=np.float64).ravel()
    if arr.shape != (params.vector_length,):
        raise ValueError(f"update has {arr.size} values, the round expects {params.vector_length}")
    clipped, norm = clip_l2(arr, params.clip)
    noised = add_distributed_noise(
        clipped, params.clip, params.noise_multiplier, params.min_cohort, rng
    )
    bound = coordinate_bound(params.clip, params.device_noise_std)
    return PrivateUpdate(encode(noised, params.frac_bits, bound=bound), norm, norm > params.clip)


def mean_update(
    total: np.ndarray,
    params: RoundParams,
    denominator: int | None = None,
    *,
    dtype: DTypeLike = np.float32,
) -> np.ndarray:
    """Coordinator side: the unmasked uint32 sum -> the average update.

    Divides by a **fixed** denominator, ``params.cohort_target`` by default (DP-FedAvg):
    dividing by the number of survivors would make the released value depend on how many
    devices took part, which the accountant does not cover.

    Args:
        total: the ring sum of the devices' fixed-point updates (``vector_length`` values).
        params: the round's parameters (``frac_bits``, ``cohort_target``).
        denominator: the fixed denominator, if not ``params.cohort_target``.
        dtype: of the result; the mean is computed in float64 and cast to it once
            (the coordinator keeps float64 to add it to the head before rounding).
    """
    denom = params.cohort_target if denominator is None else int(denominator)
    if denom < 1:
        raise ValueError(f"denominator must be >= 1 (got {denom})")
    arr = np.asarray(total)
    if arr.shape != (params.vector_length,):
        raise ValueError(f"sum has shape {arr.shape}, expected ({params.vector_length},)")
    return (decode_sum(arr, params.frac_bits) / denom).astype(dtype)
