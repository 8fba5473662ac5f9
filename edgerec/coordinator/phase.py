"""What every phase of a round is made of, and the outcomes of closing one.

A round moves ``advertise -> share -> upload -> unmask -> done``. Each phase is a
:class:`Phase` (one module each: ``phase_advertise``, ``phase_share``,
``phase_upload``, ``phase_unmask``) that answers three questions:

- :meth:`Phase.accept`: is this device's message valid now? (the checks, and the
  update of the in-memory SecAgg state; the caller stores what it returns);
- :meth:`Phase.quota`: how many messages complete the phase, so it may close early;
- :meth:`Phase.close`: given the messages in and whether the deadline passed, what
  happens next — an :data:`Outcome` that :mod:`.phase_transitions` carries out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np

from edgerec.federated import wire
from edgerec.federated.errors import ProtocolError
from edgerec.federated.protocol import RoundParams
from edgerec.federated.secagg import SecAggServer

from . import errors
from .live_rounds import LiveRound, LiveRounds
from .storage import Device, Participant, Round, Transaction


@dataclass(frozen=True)
class Accepted:
    """A valid device message, as it is stored.

    Attributes:
        payload: the JSON to store (the request body, bulky binary fields removed).
        blob: raw bytes stored beside it (the masked vector of an upload), or None.
        response: what the device is answered, now and on an identical retry.
    """

    payload: dict[str, Any]
    blob: bytes | None
    response: dict[str, Any]


@dataclass(frozen=True)
class Wait:
    """Not every expected message is in and the deadline has not passed."""


@dataclass(frozen=True)
class Advance:
    """Move to the next phase ``state`` with its deadline and the round's new ``info``."""

    state: str
    phase_deadline: float
    info: dict[str, Any]


@dataclass(frozen=True)
class Fail:
    """End the round ``failed`` (nothing released); ``culprits`` names misbehaving
    clients by id when the failure is their doing."""

    reason: str
    culprits: dict[int, str] | None = None


@dataclass(frozen=True)
class Publish:
    """The secure sum is known: publish the new head."""

    total: np.ndarray
    server: SecAggServer


Outcome = Wait | Advance | Fail | Publish


class Incoming(NamedTuple):
    """A device's message as :meth:`Phase.accept` sees it, inside the write transaction."""

    tx: Transaction
    rnd: Round
    live: LiveRound
    device: Device
    body: dict[str, Any]
    now: float


class Closing(NamedTuple):
    """What :meth:`Phase.close` decides on: ``count`` messages in, deadline ``expired``?"""

    rnd: Round
    params: RoundParams
    live: LiveRounds
    count: int
    expired: bool
    now: float


class Phase(ABC):
    """One phase of the protocol (see the module docstring)."""

    #: the round state during this phase
    name: ClassVar[str]
    #: :meth:`accept` writes rows besides the message itself (it then runs in a
    #: savepoint); a phase whose checks only read has its messages stored together
    #: at the end of the group commit
    writes: ClassVar[bool] = False

    @abstractmethod
    def quota(self, rnd: Round, params: RoundParams) -> int:
        """How many messages complete the phase (it then closes before its deadline)."""

    @abstractmethod
    def accept(self, message: Incoming) -> Accepted:
        """Validate the device's message (raising :class:`ApiError` on refusal)."""

    @abstractmethod
    def close(self, closing: Closing) -> Outcome:
        """What to do with the round now that ``closing.count`` messages are in."""


M = TypeVar("M")


@contextmanager
def refused_as_invalid() -> Iterator[None]:
    """Turn a :class:`ProtocolError` (a malformed or inconsistent message) into a 422."""
    try:
        yield
    except ProtocolError as exc:
        raise errors.invalid(str(exc), field=exc.field) from None


def parse_message(cls: type[M], body: dict[str, Any], params: RoundParams) -> M:
    """Parse a request body as protocol message ``cls`` of the round (422 if malformed)."""
    with refused_as_invalid():
        return cls.from_wire(body, params)  # type: ignore[attr-defined]


def check_client_id(got: int, want: int) -> None:
    """Refuse a message that names another SecAgg client than the sender."""
    if got != want:
        raise errors.invalid(f"client_id must be {want} (this device's id)", field="client_id")


def require_participant(tx: Transaction, rnd: Round, device: Device) -> Participant:
    """The device's participation in ``rnd``; 403 if it did not advertise keys."""
    part = tx.get_participant(rnd.round_id, device.device_id)
    if part is None:
        raise errors.forbidden(
            f"device did not advertise keys in round {rnd.round_id}",
            code=wire.E_NOT_PARTICIPANT,
        )
    return part


def ack(rnd: Round, phase: str, client_id: int) -> dict[str, Any]:
    """The answer to an accepted message."""
    return {"accepted": phase, "round": rnd.round_id, "client_id": client_id}


def participant_message(
    message: Incoming, cls: type[M], member_of: str | None = None, refusal: str = ""
) -> tuple[Participant, M]:
    """The sender's participation and its message parsed as ``cls``.

    Checks, in this order: the device advertised keys in the round (403); when
    ``member_of`` names a set of the round's info (``"shared"``, ``"survivors"``), it is
    in it (403 with ``refusal``); the body parses (422); it names the sender's own
    SecAgg client id (422).
    """
    part = require_participant(message.tx, message.rnd, message.device)
    if member_of is not None and not message.live.member(message.rnd, member_of, part.client_id):
        raise errors.forbidden(refusal, code=wire.E_NOT_PARTICIPANT)
    msg = parse_message(cls, message.body, message.live.params)
    check_client_id(msg.client_id, part.client_id)
    return part, msg
