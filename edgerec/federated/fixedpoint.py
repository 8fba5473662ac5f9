"""Fixed-point encoding of float updates into the uint32 ring of secure aggregation.

A device's (clipped, noised) update ``x`` is encoded as ``q = round(x * 2**f)`` taken mod
``2**32`` (two's complement). Secure aggregation sums the encodings mod ``2**32``; the
coordinator reads the sum back as a signed 32-bit integer and divides by ``2**f``. That
is exact as long as the true integer sum stays in ``[-2**31, 2**31)``.

To make overflow impossible rather than unlikely, every device clamps each coordinate to
``±bound`` with ``bound = clip + TAIL_SIGMAS * noise_std`` (an L2-clipped vector has
every coordinate within ``±clip``; a Gaussian coordinate exceeds ``TAIL_SIGMAS`` standard
deviations with probability ``< 1.6e-23``, so the clamp practically never changes a
value). Then ``|q| <= qmax = ceil(bound * 2**f)`` and a cohort of ``m`` devices sums to at
most ``m * qmax``; :func:`check_capacity` requires ``m * qmax < 2**31``. The same bound
lets the coordinator reject an aggregate that is out of range, which is how masks
inconsistent with a client's advertised keys show up (see ``secagg``).
"""

from __future__ import annotations

import math

import numpy as np

from edgerec.federated.errors import CapacityError

__all__ = [
    "HALF",
    "MODULUS",
    "TAIL_SIGMAS",
    "check_capacity",
    "coordinate_bound",
    "decode",
    "decode_sum",
    "device_qmax",
    "encode",
    "max_frac_bits",
    "to_signed",
]

MODULUS = 1 << 32
"""Size of the aggregation ring (values are uint32)."""
HALF = 1 << 31
"""Signed range of the ring: decoded integers lie in ``[-HALF, HALF)``."""
TAIL_SIGMAS = 10.0
"""Per-device clamp on each noised coordinate, in noise standard deviations."""
MAX_FRAC_BITS = 30


def coordinate_bound(clip: float, noise_std: float, tail_sigmas: float = TAIL_SIGMAS) -> float:
    """Largest magnitude a device's clipped-and-noised coordinate may have after clamping.

    Args:
        clip: L2 clipping bound ``C`` (bounds every coordinate of the clipped update).
        noise_std: standard deviation of the noise *one device* adds per coordinate.
        tail_sigmas: clamp width in standard deviations.
    """
    if not (math.isfinite(clip) and clip > 0):
        raise CapacityError(f"clip must be a positive finite number (got {clip!r})")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise CapacityError(f"noise_std must be finite and >= 0 (got {noise_std!r})")
    return float(clip + tail_sigmas * noise_std)


def device_qmax(clip: float, noise_std: float, frac_bits: int) -> int:
    """Largest ``|q|`` one device's encoded coordinate can have: ``ceil(bound * 2**f)``."""
    _check_frac_bits(frac_bits)
    return math.ceil(coordinate_bound(clip, noise_std) * (1 << frac_bits))


def check_capacity(num_clients: int, clip: float, noise_std: float, frac_bits: int) -> int:
    """Raise :class:`CapacityError` unless ``num_clients`` encoded updates cannot overflow.

    Args:
        num_clients: the most devices whose updates are summed (the round's cohort target).
        clip: L2 clipping bound ``C``.
        noise_std: per-device noise standard deviation (``z * C / sqrt(min_cohort)``).
        frac_bits: fractional bits ``f``.

    Returns:
        The largest possible ``|sum|`` of the encoded integers per coordinate
        (``num_clients * qmax``), which is ``< 2**31``.
    """
    if not isinstance(num_clients, int) or isinstance(num_clients, bool) or num_clients < 1:
        raise CapacityError(f"num_clients must be a positive int (got {num_clients!r})")
    worst = num_clients * device_qmax(clip, noise_std, frac_bits)
    if worst >= HALF:
        best = max_frac_bits(num_clients, clip, noise_std)
        hint = (
            f"use frac_bits <= {best}"
            if best >= 0
            else "lower the clip bound, the noise or the cohort size"
        )
        raise CapacityError(
            f"fixed point overflow possible: {num_clients} clients x per-coordinate bound "
            f"{coordinate_bound(clip, noise_std):.6g} x 2**{frac_bits} = {worst} >= 2**31; {hint}"
        )
    return worst


def max_frac_bits(num_clients: int, clip: float, noise_std: float) -> int:
    """The largest ``frac_bits`` that passes :func:`check_capacity` (``-1`` if none does)."""
    for f in range(MAX_FRAC_BITS, -1, -1):
        if num_clients * device_qmax(clip, noise_std, f) < HALF:
            return f
    return -1


def encode(x: np.ndarray, frac_bits: int, *, bound: float | None = None) -> np.ndarray:
    """Encode floats as uint32 fixed point: ``round(x * 2**f) mod 2**32``.

    Args:
        x: float array (any shape).
        frac_bits: fractional bits ``f`` (0..30).
        bound: if given, clamp every value to ``[-bound, bound]`` first (the per-device
            coordinate bound, see :func:`coordinate_bound`).

    Raises:
        ValueError: ``x`` holds NaN or infinity.
        CapacityError: a value does not fit the signed 32-bit range (only without ``bound``).
    """
    _check_frac_bits(frac_bits)
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("cannot encode NaN or infinite values")
    if bound is not None:
        arr = np.clip(arr, -bound, bound)
    q = np.rint(arr * float(1 << frac_bits))
    if q.size and (q.max() >= HALF or q.min() < -HALF):
        raise CapacityError(
            f"value out of the fixed-point range: |x| must be < 2**{31 - frac_bits}"
        )
    return q.astype(np.int64).astype(np.uint32)


def to_signed(s: np.ndarray) -> np.ndarray:
    """Read uint32 ring elements as signed two's-complement integers (int64)."""
    arr = np.asarray(s)
    if arr.dtype != np.uint32:
        raise ValueError(f"expected a uint32 array (got {arr.dtype})")
    return arr.view(np.int32).astype(np.int64)


def decode(q: np.ndarray, frac_bits: int) -> np.ndarray:
    """Inverse of :func:`encode` (up to rounding): uint32 -> float64."""
    _check_frac_bits(frac_bits)
    return to_signed(q).astype(np.float64) / float(1 << frac_bits)


def decode_sum(s: np.ndarray, frac_bits: int) -> np.ndarray:
    """Decode the ring sum of several encodings to the float64 sum of the inputs.

    Exact (up to each input's rounding to ``2**-f``) when the integer sum lies in
    ``[-2**31, 2**31)``, which :func:`check_capacity` guarantees.
    """
    return decode(s, frac_bits)


def _check_frac_bits(frac_bits: int) -> None:
    if (
        not isinstance(frac_bits, int | np.integer)
        or isinstance(frac_bits, bool)
        or not 0 <= frac_bits <= MAX_FRAC_BITS
    ):
        raise CapacityError(f"frac_bits must be an int in 0..{MAX_FRAC_BITS} (got {frac_bits!r})")
