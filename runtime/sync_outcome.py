"""How one federated sync ends: a :class:`SyncReport`, a :class:`SyncError`, or a
:class:`RoundStop` that ends the round's phase loop early.

Kept apart from :mod:`edgerec.runtime.sync` so that the transport, the state files
and the round phases can raise and fill them without importing the client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgerec.errors import EdgerecError

__all__ = ["STATUSES", "RoundStop", "SyncError", "SyncReport"]


#: what :attr:`SyncReport.status` can say (one word an app can log and branch on)
STATUSES = (
    "ok",  # did what was due (possibly nothing)
    "waiting",  # the round needs other devices first: call sync() again later
    "declined",  # sat out a round below this device's privacy floors (see ``declined``)
    "bundle_mismatch",  # the coordinator serves another bundle: its head was not used
    # and this device sits out its rounds (see ``bundle_mismatch``)
    "rate_limited",  # the coordinator asked to wait ``retry_after`` seconds
    "unauthenticated",  # no usable credentials, or the token was not recognised
    "token_expired",  # the token expired: the device must enroll again
    "revoked",  # the coordinator revoked this device
    "enrollment_refused",  # the enrollment key was refused, revoked or used up
    "refused",  # the coordinator refused a request (a 4xx the device cannot act on)
    "server_error",  # the coordinator failed (5xx); the next sync retries
    "bad_response",  # the coordinator's answer made no sense (malformed, too large)
    "network",  # the coordinator could not be reached
    "error",  # anything else (see ``error``)
)


class SyncError(EdgerecError):
    """The sync could not proceed (no credentials, token refused, bad server answer).

    Attributes:
        status: the :data:`STATUSES` word a :class:`SyncReport` reports for it.
    """

    def __init__(self, message: str, status: str = "error") -> None:
        super().__init__(message)
        self.status = status if status in STATUSES else "error"


@dataclass
class SyncReport:
    """What one :meth:`~edgerec.runtime.sync.SyncClient.sync` did (JSON-able with
    :meth:`to_json`).

    Attributes:
        device_id: this device's id at the coordinator.
        head_version: the head version the device has after the call.
        head_updated: a newer head was downloaded and applied.
        round: the coordinator's current (or last) round number, if any.
        round_state: its state as last seen.
        selected: this device is in the round's sample.
        sent: the phases whose message this call sent (``advertise``...``unmask``).
        finished: nothing more for this device to do in that round.
        waiting: the round needs others first; call ``sync()`` again later.
        error: what went wrong, if anything (the state is kept for the next call).
        retry_after: seconds the coordinator asked to wait (rate limit).
        bytes_sent / bytes_received: HTTP bodies and headers of this call.
        status: one word for the app's log (:data:`STATUSES`); never raises instead.
        declined: why this device sat out the round (below its privacy floors).
        bundle_mismatch: why the coordinator's head or round was not used: it belongs
            to another bundle (model id / version) than the one this device runs.
        token_rotated: the device switched to a fresh token during this call.
        privacy_epsilon: ε this device has spent across the published rounds its
            update is in, as the coordinator's accountant reports it (0 before any;
            None: unbounded, a round without noise).
        privacy_rounds: how many published rounds hold this device's update.
    """

    device_id: str | None = None
    head_version: int | None = None
    head_updated: bool = False
    round: int | None = None
    round_state: str | None = None
    selected: bool = False
    sent: list[str] = field(default_factory=list)
    finished: bool = False
    waiting: bool = False
    error: str | None = None
    retry_after: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    status: str = "ok"
    declined: str | None = None
    bundle_mismatch: str | None = None
    token_rotated: bool = False
    privacy_epsilon: float | None = 0.0
    privacy_rounds: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RoundStop(Exception):
    """Ends the phase loop of one sync (not an error by itself).

    Attributes:
        finished: nothing more for this device to do in the round.
        error: what went wrong, if anything.
        retry_after: seconds the coordinator asked to wait (a rate limit), if it did.
        status: the report's status word when the stop is a failure (:data:`STATUSES`).
    """

    def __init__(
        self,
        reason: str,
        finished: bool = False,
        error: str | None = None,
        retry_after: float | None = None,
        status: str | None = None,
    ):
        super().__init__(reason)
        self.finished = finished
        self.error = error
        self.retry_after = retry_after
        self.status = status
