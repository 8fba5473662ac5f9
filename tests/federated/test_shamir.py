"""Shamir secret sharing over GF(2**521 - 1)."""

from __future__ import annotations

import itertools
import random

import pytest

from edgerec.federated import shamir
from edgerec.federated.errors import ShamirError

SECRET = bytes(range(100, 132))


def test_every_t_subset_reconstructs() -> None:
    rb = random.Random(0).randbytes
    shares = shamir.split(SECRET, 6, 3, rb)
    assert [s.x for s in shares] == [1, 2, 3, 4, 5, 6]
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(list(subset), 3) == SECRET
    assert shamir.combine(shares) == SECRET  # all shares also work


def test_custom_x_coordinates_and_edge_thresholds() -> None:
    rb = random.Random(1).randbytes
    xs = [7, 2**62 + 5, 12345, 3]
    for t in (1, 2, 4):
        shares = shamir.split(SECRET, xs, t, rb)
        assert [s.x for s in shares] == xs
        assert shamir.combine(shares[-t:], t) == SECRET
    shares = shamir.split(SECRET, xs, 1, rb)
    assert all(s.y == int.from_bytes(SECRET, "big") for s in shares)


def test_fewer_than_t_shares_raise_or_give_garbage() -> None:
    rb = random.Random(2).randbytes
    shares = shamir.split(SECRET, 8, 5, rb)
    with pytest.raises(ShamirError, match="need 5"):
        shamir.combine(shares[:4], 5)
    # without the threshold, 4 points define a degree-3 polynomial whose value at 0 is a
    # uniformly random field element: detected as not fitting 32 bytes
    with pytest.raises(ShamirError, match="valid secret"):
        shamir.combine(shares[:4])


def test_fewer_than_t_shares_are_consistent_with_any_secret() -> None:
    """t-1 shares reveal nothing: for any candidate secret there is a degree t-1
    polynomial through the shares and (0, candidate)."""
    rb = random.Random(3).randbytes
    shares = shamir.split(SECRET, 5, 3, rb)
    for candidate in (bytes(32), b"\xff" * 32):
        pts = [shamir.Share(0, int.from_bytes(candidate, "big")), *shares[:2]]
        poly = shamir.interpolate_poly(pts)
        assert len(poly) == 3
        assert shamir.evaluate(poly, 0) == int.from_bytes(candidate, "big")
        assert all(shamir.evaluate(poly, s.x) == s.y for s in shares[:2])


def test_inconsistent_share_detected() -> None:
    rb = random.Random(4).randbytes
    shares = shamir.split(SECRET, 5, 3, rb)
    noise = int.from_bytes(random.Random(5).randbytes(64), "big")
    bad = [shares[0], shares[1], shamir.Share(shares[2].x, (shares[2].y + noise) % shamir.PRIME)]
    with pytest.raises(ShamirError):
        shamir.combine(bad, 3)
    # a structured error (here +1) can still land on a 32-byte value: callers that know
    # what the secret must match verify it (SecAgg checks commitments / public keys)
    off_by_one = [*shares[:2], shamir.Share(shares[2].x, shares[2].y + 1)]
    assert shamir.combine(off_by_one, 3) != SECRET


def test_poly_and_interpolation_agree() -> None:
    rb = random.Random(5).randbytes
    shares = shamir.split(SECRET, [3, 9, 27, 81, 243], 4, rb)
    coeffs = shamir.interpolate_poly(shares[:4])
    assert coeffs[0] == int.from_bytes(SECRET, "big")
    assert shamir.evaluate(coeffs, 243) == shares[4].y
    assert shamir.interpolate_at(shares[:4], 243) == shares[4].y


def test_validation_and_bytes() -> None:
    with pytest.raises(ShamirError):
        shamir.split(SECRET, [1, 1, 2], 2)
    with pytest.raises(ShamirError):
        shamir.split(SECRET, [0, 1, 2], 2)
    with pytest.raises(ShamirError):
        shamir.split(SECRET, 3, 4)
    with pytest.raises(ShamirError):
        shamir.split(b"x" * 66, 3, 2)
    with pytest.raises(ShamirError):
        shamir.combine([(1, 5), (1, 6)])
    y = shamir.split(SECRET, 2, 2)[0].y
    raw = shamir.share_to_bytes(y)
    assert len(raw) == shamir.SHARE_BYTES and shamir.share_from_bytes(raw) == y
    with pytest.raises(ShamirError):
        shamir.share_from_bytes(b"\xff" * 66)
    with pytest.raises(ShamirError):
        shamir.share_from_bytes(b"\x00" * 65)
