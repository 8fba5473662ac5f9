"""HTTP contract between the sync client and the coordinator (stdlib only).

Shared by the coordinator (:mod:`edgerec.coordinator.app` and its round engine) and
the device (``edgerec.runtime.sync``); it lives with the other building blocks both
sides agree on, so neither side imports the other. Stays importable on a device: no
fastapi, no numpy-heavy work.

Routes (all JSON; binary fields standard base64; ``{r}`` is the integer round
number, ``{d}`` the caller's device id — another device's id is refused with 403)::

    POST /v1/enroll                              enrollment key -> device id + token
    GET  /v1/status                              head, round state, (ε, δ) spent
    POST /v1/token                               rotate this device's token (a successor)
    GET  /v1/head?since=V                        current global_bias (if newer than V), its bundle
    GET  /v1/rounds/current                      open round, am I selected, my client id
    GET  /v1/rounds/{r}                          the same for one round
    POST /v1/rounds/{r}/devices/{d}/advertise    phase 0  Advertisement
    GET  /v1/rounds/{r}/devices/{d}/keys         phase 1  KeysBundle (roster + neighbour keys)
    POST /v1/rounds/{r}/devices/{d}/shares       phase 1  EncryptedShares
    GET  /v1/rounds/{r}/devices/{d}/shares       phase 2  ShareDelivery (addressed to me)
    POST /v1/rounds/{r}/devices/{d}/masked       phase 2  MaskedInput
    GET  /v1/rounds/{r}/devices/{d}/unmask       phase 3  UnmaskRequest
    POST /v1/rounds/{r}/devices/{d}/unmask       phase 3  UnmaskResponse
    POST /v1/admin/rounds                        open a round (admin token)
    GET  /v1/admin/rounds                        list rounds (admin token)
    POST /v1/admin/rounds/{r}/abort              end a running round as failed
    POST /v1/admin/tick                          close due phases now

The head answer and the round views name the bundle the head belongs to (``model_id``,
``model_version``); a device running another bundle neither applies the head nor takes
part in the round (``edgerec.runtime.sync_bundle``).

Error bodies are ``{"error": CODE, "detail": TEXT, ...}``; :data:`RETRY_LATER`
codes mean "nothing wrong, the round is not there yet: call sync() again later".
"""

from __future__ import annotations

import hashlib

API_PREFIX = "/v1"
WIRE = 1

#: error codes of a 409 that mean "come back later" rather than "you did something wrong"
RETRY_LATER = frozenset({"too_early"})

# error codes
E_UNAUTHENTICATED = "unauthenticated"
E_FORBIDDEN = "forbidden"
E_NOT_FOUND = "not_found"
E_TOO_EARLY = "too_early"
E_PHASE_CLOSED = "phase_closed"
E_ROUND_CLOSED = "round_closed"
E_CONFLICT = "conflict"
E_NOT_SELECTED = "not_selected"
E_NOT_PARTICIPANT = "not_participant"
E_ROUND_FULL = "round_full"
E_INVALID = "invalid"
E_MALFORMED = "malformed_json"
E_TOO_LARGE = "too_large"
E_RATE_LIMITED = "rate_limited"
E_BUDGET = "privacy_budget_exhausted"
E_ROUND_ACTIVE = "round_active"
E_DEVICE_REVOKED = "device_revoked"
E_TOKEN_EXPIRED = "token_expired"
E_KEY_REVOKED = "enroll_key_revoked"
E_KEY_EXHAUSTED = "enroll_key_exhausted"

#: set on an authenticated answer while the device's token is in its refresh window
#: (value: the token's expiry, Unix seconds); the device then calls ``POST /v1/token``
TOKEN_REFRESH_HEADER = "x-edgerec-token-refresh"

#: device-side phase names, in protocol order (also the ``messages.phase`` values)
DEVICE_PHASES = ("advertise", "share", "upload", "unmask")


def round_path(round_no: int, device_id: str, what: str) -> str:
    """Path of a per-device round resource, e.g. ``/v1/rounds/3/devices/d-.../masked``."""
    return f"{API_PREFIX}/rounds/{int(round_no)}/devices/{device_id}/{what}"


def client_id_for(round_name: str, device_id: str) -> int:
    """The SecAgg client id (Shamir x coordinate) of a device in a round.

    Public and deterministic: ``SHA-256("edgerec/client-id/v1" | round | device)``
    truncated to 63 bits (never 0). Both sides compute it, so no extra round trip is
    needed; the coordinator refuses the (2**-63-unlikely) collision.
    """
    digest = hashlib.sha256(
        b"edgerec/client-id/v1\x00" + round_name.encode() + b"\x00" + device_id.encode()
    ).digest()
    return (int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)) or 1
