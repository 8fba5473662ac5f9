"""Shared fixtures of the federated tests: small rounds that run in milliseconds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgerec.federated.protocol import RoundParams

SEED = bytes(range(32))


def make_params(**overrides: Any) -> RoundParams:
    """Small valid round parameters (override any field)."""
    base: dict[str, Any] = dict(
        round_id="r-1",
        head_version=3,
        cohort_target=40,
        min_cohort=5,
        deadline=1_700_000_000.0,
        clip=1.0,
        noise_multiplier=0.5,
        frac_bits=16,
        vector_length=257,
        neighbour_degree=8,
        threshold=4,
        round_seed=SEED,
    )
    base.update(overrides)
    return RoundParams(**base)


def random_inputs(params: RoundParams, ids: range | list[int], seed: int = 0) -> dict:
    """uint32 inputs as devices would produce them (privatised random updates)."""
    from edgerec.federated.dp import privatize

    rng = np.random.default_rng(seed)
    return {c: privatize(rng.normal(0, 0.1, params.vector_length), params, rng).values for c in ids}


def plain_sum(inputs: dict, ids) -> np.ndarray:
    total = np.zeros(len(next(iter(inputs.values()))), np.uint32)
    for c in ids:
        total += inputs[c]
    return total


@pytest.fixture
def params() -> RoundParams:
    return make_params()
