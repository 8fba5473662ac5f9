"""Shamir secret sharing of short secrets over the prime field GF(2**521 - 1).

A 32-byte secret ``s`` is the constant term of a random polynomial of degree ``t - 1``;
the share of the holder with x coordinate ``x`` (a non-zero field element, in SecAgg the
holder's client id) is ``(x, poly(x))``. Any ``t`` shares recover ``s`` by Lagrange
interpolation at 0; fewer reveal nothing about it (every secret is equally likely).

Because the field has 521 bits and secrets only 256, interpolating an inconsistent or too
small set of shares gives a field element ``>= 2**256`` with probability ``1 - 2**-265``,
which :func:`combine` reports as :class:`ShamirError` ("garbage detection"). Callers that
know what the secret must match (SecAgg checks a public key or a commitment) verify that
too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

from edgerec.federated.errors import ShamirError

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "Share",
    "combine",
    "evaluate",
    "interpolate_at",
    "interpolate_poly",
    "secret_from_int",
    "share_from_bytes",
    "share_to_bytes",
    "split",
]

PRIME = (1 << 521) - 1
"""The Mersenne prime 2**521 - 1."""
SHARE_BYTES = 66
"""Bytes of a share value (big-endian, ``ceil(521 / 8)``)."""
_MASK_521 = PRIME  # all 521 low bits set


class Share(NamedTuple):
    """One share: ``x`` (non-zero, < PRIME) and ``y = poly(x)`` (field element)."""

    x: int
    y: int


def _random_element(randbytes: Callable[[int], bytes]) -> int:
    while True:
        v = int.from_bytes(randbytes(SHARE_BYTES), "big") & _MASK_521
        if v < PRIME:  # rejects only 2**521 - 1 itself
            return v


def split(
    secret: bytes,
    holders: int | Sequence[int],
    threshold: int,
    randbytes: Callable[[int], bytes] | None = None,
) -> list[Share]:
    """Split ``secret`` into shares, any ``threshold`` of which recover it.

    Args:
        secret: at most 65 bytes (SecAgg uses 32); read as a big-endian integer.
        holders: ``n`` (x coordinates ``1..n``) or the distinct non-zero x coordinates.
        threshold: ``t``, with ``1 <= t <= len(holders)``.
        randbytes: source of random bytes (default ``os.urandom``; tests pass a seeded
            ``random.Random(...).randbytes``).

    Returns:
        One :class:`Share` per holder, in the order given.
    """
    xs = list(range(1, holders + 1)) if isinstance(holders, int) else [int(x) for x in holders]
    if not isinstance(secret, bytes | bytearray) or len(secret) >= SHARE_BYTES:
        raise ShamirError(f"secret must be bytes shorter than {SHARE_BYTES} bytes")
    if not 1 <= threshold <= len(xs):
        raise ShamirError(f"threshold must be in 1..{len(xs)} (got {threshold})")
    if any(not 0 < x < PRIME for x in xs) or len(set(xs)) != len(xs):
        raise ShamirError("x coordinates must be distinct, non-zero field elements")
    rb = randbytes or os.urandom
    coeffs = [int.from_bytes(secret, "big")] + [_random_element(rb) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        shares.append(Share(x, acc))
    return shares


def _batch_inverse(vals: Sequence[int]) -> list[int]:
    """Inverses of non-zero field elements with one modular inversion (Montgomery)."""
    prefix = [1] * (len(vals) + 1)
    for i, v in enumerate(vals):
        prefix[i + 1] = prefix[i] * v % PRIME
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(vals)
    for i in range(len(vals) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * vals[i] % PRIME
    return out


def _points(shares: Sequence[Share | tuple[int, int]]) -> list[tuple[int, int]]:
    pts = [(int(a) % PRIME, int(b) % PRIME) for a, b in shares]
    xs = [a for a, _ in pts]
    if not pts:
        raise ShamirError("no shares given")
    if len(set(xs)) != len(xs):
        raise ShamirError("shares must have distinct x coordinates")
    return pts


def interpolate_at(shares: Sequence[Share | tuple[int, int]], x: int = 0) -> int:
    """Value at ``x`` of the unique polynomial of degree ``< len(shares)`` through ``shares``.

    Barycentric Lagrange form with one batched inversion: O(t^2) multiplications.
    """
    pts = _points(shares)
    x %= PRIME
    for xi, yi in pts:
        if xi == x:
            return yi
    dens = []
    for i, (xi, _) in enumerate(pts):
        d = (x - xi) % PRIME
        for j, (xj, _) in enumerate(pts):
            if j != i:
                d = d * (xi - xj) % PRIME
        dens.append(d)
    acc = 0
    for (_, yi), inv in zip(pts, _batch_inverse(dens), strict=True):
        acc = (acc + yi * inv) % PRIME
    full = 1
    for xi, _ in pts:
        full = full * (x - xi) % PRIME
    return acc * full % PRIME


def interpolate_poly(shares: Sequence[Share | tuple[int, int]]) -> list[int]:
    """Coefficients (constant first) of the polynomial of degree ``< len(shares)`` through
    ``shares``; ``coeffs[0]`` is the secret. O(t^2) multiplications, one inversion."""
    pts = _points(shares)
    xs = [a for a, _ in pts]
    t = len(pts)
    full = [1]  # prod_k (X - x_k), constant first
    for xk in xs:
        nxt = [0] * (len(full) + 1)
        for i, c in enumerate(full):
            nxt[i] = (nxt[i] - xk * c) % PRIME
            nxt[i + 1] = (nxt[i + 1] + c) % PRIME
        full = nxt
    dens = []
    for j, xj in enumerate(xs):
        den = 1
        for k, xk in enumerate(xs):
            if k != j:
                den = den * (xj - xk) % PRIME
        dens.append(den)
    coeffs = [0] * t
    for (xj, yj), inv in zip(pts, _batch_inverse(dens), strict=True):
        scale = yj * inv % PRIME
        # synthetic division of ``full`` by (X - xj): quotient of degree t - 1
        carry = full[t]
        coeffs[t - 1] = (coeffs[t - 1] + scale * carry) % PRIME
        for i in range(t - 1, 0, -1):
            carry = (full[i] + carry * xj) % PRIME
            coeffs[i - 1] = (coeffs[i - 1] + scale * carry) % PRIME
    return coeffs


def evaluate(coeffs: Sequence[int], x: int) -> int:
    """Value of the polynomial ``coeffs`` (constant first) at ``x`` (Horner)."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % PRIME
    return acc


def secret_from_int(value: int, length: int = 32) -> bytes:
    """``value`` as ``length`` big-endian bytes; :class:`ShamirError` if it does not fit
    (the garbage detection of :func:`combine`)."""
    if value >> (8 * length):
        raise ShamirError(
            "shares do not reconstruct a valid secret (too few, or inconsistent shares)"
        )
    return value.to_bytes(length, "big")


def combine(
    shares: Sequence[Share | tuple[int, int]],
    threshold: int | None = None,
    length: int = 32,
) -> bytes:
    """Recover a ``length``-byte secret from shares.

    Args:
        shares: at least ``threshold`` shares with distinct x; exactly ``threshold`` of
            them are used (the first ones) when ``threshold`` is given, else all.
        threshold: the ``t`` used by :func:`split`; fewer shares raise.
        length: secret length in bytes.

    Raises:
        ShamirError: too few or duplicate shares, or the interpolated value does not fit
            ``length`` bytes (inconsistent shares or fewer than ``t`` of them, detected
            with probability ``1 - 2**(8*length - 521)``).
    """
    pts = list(shares)
    if threshold is not None:
        if len(pts) < threshold:
            raise ShamirError(f"need {threshold} shares, got {len(pts)}")
        pts = pts[:threshold]
    return secret_from_int(interpolate_at(pts, 0), length)


def share_to_bytes(y: int) -> bytes:
    """Fixed-width big-endian encoding of a share value."""
    if not 0 <= y < PRIME:
        raise ShamirError("share value is not a field element")
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(raw: bytes) -> int:
    """Inverse of :func:`share_to_bytes` (validates length and range)."""
    if len(raw) != SHARE_BYTES:
        raise ShamirError(f"a share value is {SHARE_BYTES} bytes (got {len(raw)})")
    y = int.from_bytes(raw, "big")
    if y >= PRIME:
        raise ShamirError("share value is not a field element")
    return y
