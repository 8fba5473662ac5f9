"""Fixed-point encoding into the uint32 ring and its overflow capacity."""

from __future__ import annotations

import numpy as np
import pytest

from edgerec.federated import fixedpoint as fp
from edgerec.federated.errors import CapacityError


def test_encode_is_twos_complement() -> None:
    q = fp.encode(np.array([0.0, 1.0, -1.0, 0.5, -(2**-16)]), 16)
    assert q.dtype == np.uint32
    assert q.tolist() == [0, 65536, 2**32 - 65536, 32768, 2**32 - 1]


def test_roundtrip_within_half_ulp() -> None:
    x = np.random.default_rng(0).normal(0, 3, 1000)
    for f in (0, 8, 20):
        back = fp.decode(fp.encode(x, f), f)
        assert np.max(np.abs(back - x)) <= 2.0 ** -(f + 1) + 1e-12


def test_sum_of_encodings_decodes_to_sum_of_roundings() -> None:
    rng = np.random.default_rng(1)
    xs = rng.uniform(-1, 1, (50, 100))
    total = np.zeros(100, np.uint32)
    for x in xs:
        total += fp.encode(x, 20)
    expected = np.rint(xs * 2**20).sum(axis=0) / 2**20
    assert np.array_equal(fp.decode_sum(total, 20), expected)
    assert np.all(fp.decode_sum(total, 20) < 0) == np.all(expected < 0)


def test_encode_rejects_nan_and_overflow_and_clamps() -> None:
    with pytest.raises(ValueError, match="NaN"):
        fp.encode(np.array([np.nan]), 4)
    with pytest.raises(CapacityError):
        fp.encode(np.array([2.0**15]), 16)
    q = fp.encode(np.array([1e9, -1e9]), 16, bound=2.0)
    assert fp.decode(q, 16).tolist() == [2.0, -2.0]


def test_capacity() -> None:
    # 1000 clients, C=1, per-device noise 0.1 -> bound 2.0, qmax = 2 * 2**f
    assert fp.max_frac_bits(1000, 1.0, 0.1) == 20  # 1000 * 2 * 2**21 > 2**31
    assert fp.check_capacity(1000, 1.0, 0.1, 20) == 1000 * 2 * 2**20
    with pytest.raises(CapacityError, match="frac_bits <= 20"):
        fp.check_capacity(1000, 1.0, 0.1, 21)
    assert fp.coordinate_bound(1.0, 0.1) == pytest.approx(2.0)
    with pytest.raises(CapacityError):
        fp.check_capacity(0, 1.0, 0.0, 4)


def test_to_signed_requires_uint32() -> None:
    with pytest.raises(ValueError):
        fp.to_signed(np.zeros(3, np.int64))
