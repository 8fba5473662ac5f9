"""Pydantic models of the HTTP API: request validation and the OpenAPI schema.

These check the JSON *shape* (types, exact keys, sizes, base64 alphabet); the
round-aware checks (lengths against the round's vector length, neighbour sets,
client ids) are done by :mod:`edgerec.federated.protocol` parsers in the engine.
Every model forbids unknown fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgerec.federated.protocol import MAX_CLIENT_ID, MAX_VECTOR_LENGTH, WIRE_VERSION

from .config import MAX_DEGREE

B64 = r"^[A-Za-z0-9+/]*={0,2}$"
ID_KEY = r"^[1-9][0-9]{0,18}$"
ROUND_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"

Key32 = Annotated[str, Field(pattern=B64, min_length=44, max_length=44, description="32 bytes")]
Ciphertext = Annotated[str, Field(pattern=B64, max_length=512)]
ShareValue = Annotated[str, Field(pattern=B64, max_length=128)]
ClientKey = Annotated[str, Field(pattern=ID_KEY)]
ClientId = Annotated[int, Field(ge=1, le=MAX_CLIENT_ID)]
RoundName = Annotated[str, Field(pattern=ROUND_NAME)]
Version = Literal[1]

assert WIRE_VERSION == 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------- enrollment
class EnrollRequest(Strict):
    """A device asks for credentials with an enrollment key configured on the server."""

    enroll_key: str = Field(min_length=1, max_length=512)


class EnrollResponse(Strict):
    device_id: str
    token: str = Field(description="bearer token; shown once, stored hashed on the server")


# ---------------------------------------------------------------------- round phases
class AdvertiseBody(Strict):
    """Phase 0: two fresh X25519 public keys and a commitment to the self-mask seed."""

    type: Literal["advertise"]
    version: Version
    round_id: RoundName
    client_id: ClientId
    c_pk: Key32
    s_pk: Key32
    b_commit: Key32


class SharesBody(Strict):
    """Phase 1: one AES-GCM ciphertext per neighbour, keyed by the neighbour's client id."""

    type: Literal["shares"]
    version: Version
    round_id: RoundName
    client_id: ClientId
    ciphertexts: Annotated[dict[ClientKey, Ciphertext], Field(max_length=MAX_DEGREE)]


class MaskedBody(Strict):
    """Phase 2: the masked update, ``length`` uint32 values, little-endian, base64."""

    type: Literal["masked_input"]
    version: Version
    round_id: RoundName
    client_id: ClientId
    length: int = Field(ge=1, le=MAX_VECTOR_LENGTH)
    data: str = Field(pattern=B64, max_length=4 * ((4 * MAX_VECTOR_LENGTH + 2) // 3))


class UnmaskBody(Strict):
    """Phase 3: Shamir shares of survivors' self-mask seeds / dropouts' masking keys."""

    type: Literal["unmask_response"]
    version: Version
    round_id: RoundName
    client_id: ClientId
    b_shares: Annotated[dict[ClientKey, ShareValue], Field(max_length=MAX_DEGREE)]
    s_sk_shares: Annotated[dict[ClientKey, ShareValue], Field(max_length=MAX_DEGREE)]


class Ack(Strict):
    accepted: str
    round: int
    client_id: int
    sha256: str | None = None


# ---------------------------------------------------------------------- admin
class OpenRoundRequest(Strict):
    """Parameters of a new round (see :class:`edgerec.coordinator.config.RoundConfig`)."""

    cohort_target: int = Field(ge=2, le=1_000_000)
    min_cohort: int = Field(ge=2, le=1_000_000)
    deadline_s: float = Field(600.0, gt=0, le=7 * 86400)
    phase_timeout_s: float | None = Field(None, gt=0, le=7 * 86400)
    clip: float = Field(1.0, gt=0, le=1e6)
    noise_multiplier: float | None = Field(None, ge=0, le=1e6)
    target_epsilon: float | None = Field(None, gt=0, le=1e6)
    delta: float | None = Field(None, gt=0, lt=1)
    frac_bits: int | None = Field(None, ge=0, le=30)
    neighbour_degree: int | None = Field(None, ge=2, le=MAX_DEGREE)
    threshold: int | None = Field(None, ge=2, le=MAX_DEGREE)
    dropout: float = Field(0.3, ge=0, lt=1)
    server_lr: float = Field(1.0, gt=0, le=1e6)
    training: dict[str, float | int | str | bool] = Field(default_factory=dict, max_length=32)
    cohort_tail: float = Field(1e-12, gt=0, lt=0.5)


class NewEnrollKeyRequest(Strict):
    """A new database enrollment key: an optional label and quota (devices it may enroll)."""

    label: str = Field("", max_length=200)
    quota: int | None = Field(None, ge=1, le=10**9)


class ErrorBody(BaseModel):
    error: str
    detail: Any


#: documented error answers shared by the device routes
DEVICE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed JSON"},
    401: {"model": ErrorBody, "description": "missing or invalid device token"},
    403: {"model": ErrorBody, "description": "another device's resource, or not in the round"},
    404: {"model": ErrorBody, "description": "no such round"},
    409: {"model": ErrorBody, "description": "wrong phase, or a different message already sent"},
    410: {"model": ErrorBody, "description": "the round has ended"},
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "invalid message (shape, length, encoding)"},
    429: {"model": ErrorBody, "description": "rate limited (see Retry-After)"},
}
