"""Federated-learning building blocks shared by devices and the coordinator.

Only what both sides must agree on lives here: TensorFlow-free and importable on a
device (numpy + ``cryptography``; the privacy accountant imports ``dp_accounting``
lazily). It imports nothing from the runtime, the coordinator or the simulation
harness (:mod:`edgerec.simulation`), which build on it.

Modules:
    protocol    round parameters and wire messages (JSON, strict validation)
    wire        HTTP routes, error codes and client ids of the sync API (stdlib only)
    fixedpoint  float <-> uint32 ring encoding and overflow capacity
    clipping    L2 clipping
    dp          distributed Gaussian noise, the device privatisation pipeline
    sampling    Poisson cohort sampling with a bounded cohort and its cost in δ
    accountant  (ε, δ) accounting with dp-accounting's RDP accountant
    shamir      Shamir secret sharing over GF(2**521 - 1)
    secagg      SecAgg+ client state machine and server
    local       on-device training of the additive item-bias head
    errors      the exception types (protocol, SecAgg, Shamir, capacity, decryption)
"""

from __future__ import annotations

from edgerec.federated.errors import (
    CapacityError,
    DecryptionError,
    FederatedError,
    ProtocolError,
    SecAggError,
    ShamirError,
)
from edgerec.federated.protocol import WIRE_VERSION, RoundParams

__all__ = [
    "WIRE_VERSION",
    "CapacityError",
    "DecryptionError",
    "FederatedError",
    "ProtocolError",
    "RoundParams",
    "SecAggError",
    "ShamirError",
]
