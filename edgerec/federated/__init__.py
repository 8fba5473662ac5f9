"""Federated learning primitives shared by devices and the coordinator.

TensorFlow-free and importable on a device (numpy + ``cryptography``); the privacy
accountant (:mod:`edgerec.federated.accountant`) imports ``dp_accounting`` lazily.

Modules:
    protocol    round parameters and wire messages (JSON, strict validation)
    fixedpoint  float <-> uint32 ring encoding and overflow capacity
    clipping    L2 clipping
    dp          distributed Gaussian noise, the device privatisation pipeline
    accountant  (ε, δ) accounting with dp-accounting's RDP accountant
    shamir      Shamir secret sharing over GF(2**521 - 1)
    secagg      SecAgg+ client state machine and server
    local       on-device training of the additive item-bias head
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
