"""Exception types of :mod:`edgerec.federated`.

The coordinator maps :class:`ProtocolError` (and its subclasses) to a 4xx answer: the
message it received was malformed, inconsistent with the round, or out of order. A
:class:`SecAggError` means the round cannot produce its sum (too many dropouts, a
reconstruction that does not verify, an aggregate out of range): the round ends
``failed`` and releases nothing.
"""

from __future__ import annotations

from edgerec.errors import EdgerecError

__all__ = [
    "CapacityError",
    "DecryptionError",
    "FederatedError",
    "ProtocolError",
    "SecAggError",
    "ShamirError",
]


class FederatedError(EdgerecError):
    """Base class of every error raised by :mod:`edgerec.federated`."""


class ProtocolError(FederatedError, ValueError):
    """A message is malformed, out of order, or inconsistent with the round.

    Attributes:
        field: dotted path of the offending field in the wire message, when known.
        client_id: the client the message came from, when known.
    """

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, client_id: int | None = None):
        super().__init__(message)
        self.field = field
        self.client_id = client_id


class DecryptionError(ProtocolError):
    """A share ciphertext failed AES-GCM authentication.

    ``sender`` names the client whose ciphertext was rejected (tampered, re-routed to
    the wrong receiver or round, or not encrypted with the advertised keys).
    """

    def __init__(self, message: str, *, sender: int, receiver: int):
        super().__init__(message, field=f"ciphertexts.{sender}", client_id=sender)
        self.sender = sender
        self.receiver = receiver


class SecAggError(FederatedError):
    """Secure aggregation cannot produce the round's sum.

    Attributes:
        culprits: client id -> what it did wrong, for clients identified as misbehaving
            (empty when the failure is plain dropout).
    """

    def __init__(self, message: str, *, culprits: dict[int, str] | None = None):
        super().__init__(message)
        self.culprits: dict[int, str] = dict(culprits or {})


class ShamirError(FederatedError, ValueError):
    """Shamir shares cannot be combined (too few, duplicated, or inconsistent)."""


class CapacityError(FederatedError, ValueError):
    """Fixed-point parameters would let the uint32 ring overflow."""

    exit_code = 2
