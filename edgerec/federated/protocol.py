"""Round parameters and the wire messages of every federated round phase.

Everything here is plain data with a JSON form (``to_wire()`` -> dict of JSON types, bytes
as standard base64 with padding) and a strict parser (``from_wire(data, params)``) that
checks types, exact key sets, lengths and shapes and raises :class:`ProtocolError` with
the offending field. Client ids are positive ints (``1 .. 2**63 - 1``); JSON object keys
that hold ids are their canonical decimal strings.

Phases (see ``docs/federated-protocol.md``)::

    device -> server   Advertisement         phase 0 advertise
    server -> device   KeysBundle            phase 1 roster + neighbours' public keys
    device -> server   EncryptedShares       phase 1 one AES-GCM ciphertext per neighbour
    server -> device   ShareDelivery         phase 2 ciphertexts addressed to the device
    device -> server   MaskedInput           phase 2 masked uint32 vector
    server -> device   UnmaskRequest         phase 3 survivors and dropouts
    device -> server   UnmaskResponse        phase 3 Shamir shares for reconstruction
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from edgerec.federated.errors import CapacityError, ProtocolError
from edgerec.federated.fixedpoint import check_capacity, coordinate_bound, device_qmax

__all__ = [
    "CIPHERTEXT_BYTES",
    "KEY_BYTES",
    "MAX_CLIENT_ID",
    "SHARE_BYTES",
    "WIRE_VERSION",
    "Advertisement",
    "EncryptedShares",
    "KeysBundle",
    "MaskedInput",
    "Message",
    "PublicKeys",
    "RoundParams",
    "ShareDelivery",
    "UnmaskRequest",
    "UnmaskResponse",
    "dumps",
    "from_wire",
    "loads",
    "to_wire",
]

WIRE_VERSION = 1
"""Version of the wire format and of the SecAgg key derivations."""
KEY_BYTES = 32
"""X25519 public keys, the self-mask seed, its commitment and the round seed."""
SHARE_BYTES = 66
"""A Shamir share value: big-endian element of GF(2**521 - 1)."""
PLAINTEXT_BYTES = 1 + 8 + 8 + 2 * SHARE_BYTES
CIPHERTEXT_BYTES = 12 + PLAINTEXT_BYTES + 16
"""nonce (12) || AES-GCM(version, sender, receiver, b-share, s_sk-share) || tag (16)."""
MAX_CLIENT_ID = (1 << 63) - 1
MAX_COHORT = 1_000_000
MAX_VECTOR_LENGTH = 1 << 24
MAX_NEIGHBOUR_DEGREE = 1024
_ROUND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_ID_KEY = re.compile(r"[1-9][0-9]{0,18}")


# --------------------------------------------------------------------------- helpers


def _b64e(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64d(value: Any, fld: str, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(
            f"{fld}: expected a base64 string, got {type(value).__name__}", field=fld
        )
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ProtocolError(f"{fld}: not valid standard base64", field=fld) from None
    if length is not None and len(raw) != length:
        raise ProtocolError(f"{fld}: expected {length} bytes, got {len(raw)}", field=fld)
    return raw


def _int(value: Any, fld: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{fld}: expected an integer, got {type(value).__name__}", field=fld)
    if not lo <= value <= hi:
        raise ProtocolError(f"{fld}: {value} is outside {lo}..{hi}", field=fld)
    return value


def _float(value: Any, fld: str, lo: float, hi: float = math.inf) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolError(f"{fld}: expected a number, got {type(value).__name__}", field=fld)
    val = float(value)
    if not math.isfinite(val) or not lo <= val <= hi:
        raise ProtocolError(f"{fld}: {value!r} is not a finite number in [{lo}, {hi}]", field=fld)
    return val


def _cid(value: Any, fld: str) -> int:
    return _int(value, fld, 1, MAX_CLIENT_ID)


def _cid_key(key: Any, fld: str) -> int:
    if not isinstance(key, str) or not _ID_KEY.fullmatch(key) or int(key) > MAX_CLIENT_ID:
        raise ProtocolError(f"{fld}: key {key!r} is not a canonical client id", field=fld)
    return int(key)


def _str(value: Any, fld: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{fld}: expected a string, got {type(value).__name__}", field=fld)
    return value


def _obj(data: Any, fld: str, keys: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{fld}: expected a JSON object, got {type(data).__name__}", field=fld)
    want = set(keys)
    have = set(data)
    if have != want:
        missing = sorted(want - have)
        extra = sorted(str(k) for k in have - want)
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unknown {extra}"] if extra else []
        raise ProtocolError(f"{fld}: {'; '.join(parts)}", field=fld)
    return data


def _id_list(value: Any, fld: str, max_len: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ProtocolError(f"{fld}: expected a list of client ids", field=fld)
    if len(value) > max_len:
        raise ProtocolError(f"{fld}: {len(value)} ids, at most {max_len} allowed", field=fld)
    ids = tuple(_cid(v, f"{fld}[{i}]") for i, v in enumerate(value))
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise ProtocolError(f"{fld}: ids must be sorted ascending without duplicates", field=fld)
    return ids


def _id_map(value: Any, fld: str, max_len: int) -> dict[int, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{fld}: expected a JSON object keyed by client id", field=fld)
    if len(value) > max_len:
        raise ProtocolError(f"{fld}: {len(value)} entries, at most {max_len} allowed", field=fld)
    return {_cid_key(k, fld): v for k, v in value.items()}


def _check_round(msg_round: str, params: RoundParams | None, fld: str = "round_id") -> None:
    if params is not None and msg_round != params.round_id:
        raise ProtocolError(
            f"{fld}: message is for round {msg_round!r}, this is round {params.round_id!r}",
            field=fld,
        )


def _check_round_id(value: Any) -> str:
    rid = _str(value, "round_id")
    if not _ROUND_ID.fullmatch(rid):
        raise ProtocolError(
            "round_id: 1-64 characters from [A-Za-z0-9._:-], starting alphanumeric",
            field="round_id",
        )
    return rid


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class RoundParams:
    """Everything a device and the coordinator must agree on for one round.

    Attributes:
        round_id: unique round name (bound into every key derivation and ciphertext).
        head_version: version of ``global_bias`` the round trains from.
        cohort_target: the most devices admitted (the fixed-point capacity is checked for
            this many; the coordinator must not admit more).
        min_cohort: fewest surviving devices that may be unmasked (also ``m_min`` of the
            distributed noise: each device adds std ``z*C/sqrt(min_cohort)``).
        deadline: unix time (seconds) after which the coordinator stops waiting.
        clip: L2 clipping bound ``C`` of each device's update.
        noise_multiplier: ``z`` (0 = no DP noise).
        frac_bits: fixed-point fractional bits ``f``.
        vector_length: number of values in an update.
        neighbour_degree: SecAgg+ neighbour count ``k`` (even); with fewer than ``k + 1``
            clients the graph is complete.
        threshold: Shamir threshold ``t`` (``2 <= t <= k``); see :meth:`effective_graph`.
        round_seed: 32 public random bytes fixing the neighbour graph.
        version: wire version (must be :data:`WIRE_VERSION`).
    """

    round_id: str
    head_version: int
    cohort_target: int
    min_cohort: int
    deadline: float
    clip: float
    noise_multiplier: float
    frac_bits: int
    vector_length: int
    neighbour_degree: int
    threshold: int
    round_seed: bytes
    version: int = WIRE_VERSION

    TYPE: ClassVar[str] = "round_params"

    def __post_init__(self) -> None:
        _check_round_id(self.round_id)
        _int(self.version, "version", WIRE_VERSION, WIRE_VERSION)
        _int(self.head_version, "head_version", 0, MAX_CLIENT_ID)
        _int(self.cohort_target, "cohort_target", 2, MAX_COHORT)
        _int(self.min_cohort, "min_cohort", 2, self.cohort_target)
        _float(self.deadline, "deadline", 0.0)
        _float(self.clip, "clip", 0.0)
        if self.clip <= 0:
            raise ProtocolError("clip: must be > 0", field="clip")
        _float(self.noise_multiplier, "noise_multiplier", 0.0, 1e6)
        _int(self.frac_bits, "frac_bits", 0, 30)
        _int(self.vector_length, "vector_length", 1, MAX_VECTOR_LENGTH)
        _int(self.neighbour_degree, "neighbour_degree", 2, MAX_NEIGHBOUR_DEGREE)
        if self.neighbour_degree % 2:
            raise ProtocolError("neighbour_degree: must be even", field="neighbour_degree")
        _int(self.threshold, "threshold", 2, self.neighbour_degree)
        if not isinstance(self.round_seed, bytes) or len(self.round_seed) != KEY_BYTES:
            raise ProtocolError(f"round_seed: must be {KEY_BYTES} bytes", field="round_seed")
        try:
            check_capacity(self.cohort_target, self.clip, self.device_noise_std, self.frac_bits)
        except CapacityError as exc:
            raise ProtocolError(f"frac_bits: {exc}", field="frac_bits") from None

    @classmethod
    def new(cls, round_id: str, **kwargs: Any) -> RoundParams:
        """Create parameters with a fresh random ``round_seed`` (other fields as keywords)."""
        kwargs.setdefault("round_seed", os.urandom(KEY_BYTES))
        return cls(round_id=round_id, **kwargs)

    @property
    def device_noise_std(self) -> float:
        """Noise std each device adds per coordinate: ``z * C / sqrt(min_cohort)``."""
        return float(self.noise_multiplier * self.clip / math.sqrt(self.min_cohort))

    @property
    def coordinate_bound(self) -> float:
        """Clamp applied by devices to each noised coordinate (see ``fixedpoint``)."""
        return coordinate_bound(self.clip, self.device_noise_std)

    @property
    def qmax(self) -> int:
        """Largest |encoded coordinate| of one honest device."""
        return device_qmax(self.clip, self.device_noise_std, self.frac_bits)

    def effective_graph(self, num_clients: int) -> tuple[int, int]:
        """Degree and threshold ``(k_eff, t_eff)`` for a roster of ``num_clients``.

        With ``num_clients > k`` they are ``(k, t)``. Smaller rosters use the complete
        graph, ``k_eff = num_clients - 1``, and keep the threshold's fraction:
        ``t_eff = clamp(ceil(t * k_eff / k), 1, k_eff)``.
        """
        if num_clients < 2:
            raise ProtocolError(f"a SecAgg round needs at least 2 clients (got {num_clients})")
        k, t = self.neighbour_degree, self.threshold
        if num_clients - 1 >= k:
            return k, t
        k_eff = num_clients - 1
        return k_eff, max(1, min(k_eff, math.ceil(t * k_eff / k)))

    def to_wire(self) -> dict[str, Any]:
        """JSON form (``round_seed`` base64)."""
        return {
            "type": self.TYPE,
            "version": self.version,
            "round_id": self.round_id,
            "head_version": self.head_version,
            "cohort_target": self.cohort_target,
            "min_cohort": self.min_cohort,
            "deadline": self.deadline,
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "frac_bits": self.frac_bits,
            "vector_length": self.vector_length,
            "neighbour_degree": self.neighbour_degree,
            "threshold": self.threshold,
            "round_seed": _b64e(self.round_seed),
        }

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> RoundParams:
        """Parse and validate :meth:`to_wire` output (``params`` is ignored)."""
        d = _obj(data, "round_params", cls._FIELDS)
        if d["type"] != cls.TYPE:
            raise ProtocolError(f"type: expected {cls.TYPE!r}, got {d['type']!r}", field="type")
        _int(d["version"], "version", WIRE_VERSION, WIRE_VERSION)
        return cls(
            round_id=_check_round_id(d["round_id"]),
            head_version=_int(d["head_version"], "head_version", 0, MAX_CLIENT_ID),
            cohort_target=_int(d["cohort_target"], "cohort_target", 2, MAX_COHORT),
            min_cohort=_int(d["min_cohort"], "min_cohort", 2, MAX_COHORT),
            deadline=_float(d["deadline"], "deadline", 0.0),
            clip=_float(d["clip"], "clip", 0.0),
            noise_multiplier=_float(d["noise_multiplier"], "noise_multiplier", 0.0, 1e6),
            frac_bits=_int(d["frac_bits"], "frac_bits", 0, 30),
            vector_length=_int(d["vector_length"], "vector_length", 1, MAX_VECTOR_LENGTH),
            neighbour_degree=_int(
                d["neighbour_degree"], "neighbour_degree", 2, MAX_NEIGHBOUR_DEGREE
            ),
            threshold=_int(d["threshold"], "threshold", 2, MAX_NEIGHBOUR_DEGREE),
            round_seed=_b64d(d["round_seed"], "round_seed", KEY_BYTES),
            version=d["version"],
        )

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_wire`."""
        return json.dumps(self.to_wire(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RoundParams:
        """Inverse of :meth:`to_json`."""
        return cls.from_wire(_json_loads(text))

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "type",
        "version",
        "round_id",
        "head_version",
        "cohort_target",
        "min_cohort",
        "deadline",
        "clip",
        "noise_multiplier",
        "frac_bits",
        "vector_length",
        "neighbour_degree",
        "threshold",
        "round_seed",
    )


# --------------------------------------------------------------------------- messages


class PublicKeys(NamedTuple):
    """A client's two X25519 public keys: ``c_pk`` (share encryption), ``s_pk`` (masking)."""

    c_pk: bytes
    s_pk: bytes


@dataclass(frozen=True)
class Advertisement:
    """Phase 0, device -> server: fresh public keys and a commitment to the self-mask seed.

    ``b_commit = SHA-256("edgerec/secagg/v1/commit" | round | client | b)`` lets the
    server verify the self-mask seed it reconstructs.
    """

    round_id: str
    client_id: int
    c_pk: bytes
    s_pk: bytes
    b_commit: bytes

    TYPE: ClassVar[str] = "advertise"

    @property
    def public_keys(self) -> PublicKeys:
        return PublicKeys(self.c_pk, self.s_pk)

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "version": WIRE_VERSION,
            "round_id": self.round_id,
            "client_id": self.client_id,
            "c_pk": _b64e(self.c_pk),
            "s_pk": _b64e(self.s_pk),
            "b_commit": _b64e(self.b_commit),
        }

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> Advertisement:
        d = _header(data, cls.TYPE, ("client_id", "c_pk", "s_pk", "b_commit"), params)
        return cls(
            round_id=d["round_id"],
            client_id=_cid(d["client_id"], "client_id"),
            c_pk=_b64d(d["c_pk"], "c_pk", KEY_BYTES),
            s_pk=_b64d(d["s_pk"], "s_pk", KEY_BYTES),
            b_commit=_b64d(d["b_commit"], "b_commit", KEY_BYTES),
        )


@dataclass(frozen=True)
class KeysBundle:
    """Phase 1, server -> device: the full roster and (at least) the neighbours' keys.

    The device recomputes its neighbours from ``round_seed`` and the roster, so the
    server cannot choose them.
    """

    round_id: str
    client_id: int
    roster: tuple[int, ...]
    keys: dict[int, PublicKeys]

    TYPE: ClassVar[str] = "keys"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "version": WIRE_VERSION,
            "round_id": self.round_id,
            "client_id": self.client_id,
            "roster": list(self.roster),
            "keys": {
                str(c): {"c_pk": _b64e(k.c_pk), "s_pk": _b64e(k.s_pk)}
                for c, k in sorted(self.keys.items())
            },
        }

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> KeysBundle:
        d = _header(data, cls.TYPE, ("client_id", "roster", "keys"), params)
        cap = params.cohort_target if params else MAX_COHORT
        roster = _id_list(d["roster"], "roster", cap)
        members = set(roster)
        keys: dict[int, PublicKeys] = {}
        for cid, entry in _id_map(d["keys"], "keys", cap).items():
            fld = f"keys.{cid}"
            if cid not in members:
                raise ProtocolError(f"{fld}: client {cid} is not in the roster", field=fld)
            e = _obj(entry, fld, ("c_pk", "s_pk"))
            keys[cid] = PublicKeys(
                _b64d(e["c_pk"], f"{fld}.c_pk", KEY_BYTES),
                _b64d(e["s_pk"], f"{fld}.s_pk", KEY_BYTES),
            )
        client_id = _cid(d["client_id"], "client_id")
        if client_id not in members:
            raise ProtocolError(f"client_id: {client_id} is not in the roster", field="client_id")
        return cls(d["round_id"], client_id, roster, keys)


@dataclass(frozen=True)
class EncryptedShares:
    """Phase 1, device -> server: one ciphertext per neighbour (``receiver -> bytes``)."""

    round_id: str
    client_id: int
    ciphertexts: dict[int, bytes]

    TYPE: ClassVar[str] = "shares"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "version": WIRE_VERSION,
            "round_id": self.round_id,
            "client_id": self.client_id,
            "ciphertexts": {str(c): _b64e(v) for c, v in sorted(self.ciphertexts.items())},
        }

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> EncryptedShares:
        d = _header(data, cls.TYPE, ("client_id", "ciphertexts"), params)
        return cls(
            d["round_id"], _cid(d["client_id"], "client_id"), _ciphertexts(d["ciphertexts"], params)
        )


@dataclass(frozen=True)
class ShareDelivery:
    """Phase 2, server -> device: the ciphertexts addressed to ``client_id`` (by sender).

    The senders are exactly the device's neighbours that completed phase 1; the device
    masks with exactly these.
    """

    round_id: str
    client_id: int
    ciphertexts: dict[int, bytes]

    TYPE: ClassVar[str] = "share_delivery"

    def to_wire(self) -> dict[str, Any]:
        return EncryptedShares.to_wire(self) | {"type": self.TYPE}  # type: ignore[arg-type]

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> ShareDelivery:
        d = _header(data, cls.TYPE, ("client_id", "ciphertexts"), params)
        return cls(
            d["round_id"], _cid(d["client_id"], "client_id"), _ciphertexts(d["ciphertexts"], params)
        )


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Phase 2, device -> server: the masked uint32 vector (wire: little-endian, base64)."""

    round_id: str
    client_id: int
    y: np.ndarray

    TYPE: ClassVar[str] = "masked_input"

    def __post_init__(self) -> None:
        arr = np.asarray(self.y)
        if arr.dtype != np.uint32 or arr.ndim != 1:
            raise ProtocolError("y: must be a 1-D uint32 array", field="y")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MaskedInput)
            and (self.round_id, self.client_id) == (other.round_id, other.client_id)
            and np.array_equal(self.y, other.y)
        )

    __hash__ = None  # type: ignore[assignment]

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "version": WIRE_VERSION,
            "round_id": self.round_id,
            "client_id": self.client_id,
            "length": int(self.y.size),
            "data": _b64e(np.ascontiguousarray(self.y, dtype="<u4").tobytes()),
        }

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> MaskedInput:
        d = _header(data, cls.TYPE, ("client_id", "length", "data"), params)
        n = _int(d["length"], "length", 1, MAX_VECTOR_LENGTH)
        if params is not None and n != params.vector_length:
            raise ProtocolError(
                f"length: {n} values, the round expects {params.vector_length}", field="length"
            )
        raw = _b64d(d["data"], "data", 4 * n)
        y = np.frombuffer(raw, dtype="<u4").astype(np.uint32)
        return cls(d["round_id"], _cid(d["client_id"], "client_id"), y)


@dataclass(frozen=True)
class UnmaskRequest:
    """Phase 3, server -> devices: who survived (uploaded) and who dropped after sharing."""

    round_id: str
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    TYPE: ClassVar[str] = "unmask_request"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "version": WIRE_VERSION,
            "round_id": self.round_id,
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
        }

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> UnmaskRequest:
        d = _header(data, cls.TYPE, ("survivors", "dropped"), params)
        cap = params.cohort_target if params else MAX_COHORT
        survivors = _id_list(d["survivors"], "survivors", cap)
        dropped = _id_list(d["dropped"], "dropped", cap)
        both = set(survivors) & set(dropped)
        if both:
            raise ProtocolError(
                f"dropped: {sorted(both)[:5]} also listed as survivors", field="dropped"
            )
        return cls(d["round_id"], survivors, dropped)


@dataclass(frozen=True)
class UnmaskResponse:
    """Phase 3, device -> server: shares of survivors' self-mask seeds (``b_shares``) and
    of dropouts' masking keys (``s_sk_shares``), keyed by the share owner's id. The
    share's x coordinate is the responding ``client_id``."""

    round_id: str
    client_id: int
    b_shares: dict[int, bytes]
    s_sk_shares: dict[int, bytes]

    TYPE: ClassVar[str] = "unmask_response"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "version": WIRE_VERSION,
            "round_id": self.round_id,
            "client_id": self.client_id,
            "b_shares": {str(c): _b64e(v) for c, v in sorted(self.b_shares.items())},
            "s_sk_shares": {str(c): _b64e(v) for c, v in sorted(self.s_sk_shares.items())},
        }

    @classmethod
    def from_wire(cls, data: Any, params: RoundParams | None = None) -> UnmaskResponse:
        d = _header(data, cls.TYPE, ("client_id", "b_shares", "s_sk_shares"), params)
        cap = params.neighbour_degree if params else MAX_NEIGHBOUR_DEGREE
        out: list[dict[int, bytes]] = []
        for name in ("b_shares", "s_sk_shares"):
            m = _id_map(d[name], name, cap)
            out.append({c: _b64d(v, f"{name}.{c}", SHARE_BYTES) for c, v in m.items()})
        overlap = set(out[0]) & set(out[1])
        if overlap:
            raise ProtocolError(
                f"s_sk_shares: both kinds of share revealed for clients {sorted(overlap)[:5]}",
                field="s_sk_shares",
            )
        return cls(d["round_id"], _cid(d["client_id"], "client_id"), out[0], out[1])


Message = (
    RoundParams
    | Advertisement
    | KeysBundle
    | EncryptedShares
    | ShareDelivery
    | MaskedInput
    | UnmaskRequest
    | UnmaskResponse
)
_TYPES: dict[str, Any] = {
    c.TYPE: c
    for c in (
        RoundParams,
        Advertisement,
        KeysBundle,
        EncryptedShares,
        ShareDelivery,
        MaskedInput,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def _header(
    data: Any, type_: str, fields: tuple[str, ...], params: RoundParams | None
) -> Mapping[str, Any]:
    d = _obj(data, type_, ("type", "version", "round_id", *fields))
    if d["type"] != type_:
        raise ProtocolError(f"type: expected {type_!r}, got {d['type']!r}", field="type")
    _int(d["version"], "version", WIRE_VERSION, WIRE_VERSION)
    _check_round_id(d["round_id"])
    _check_round(d["round_id"], params)
    return d


def _ciphertexts(value: Any, params: RoundParams | None) -> dict[int, bytes]:
    cap = params.neighbour_degree if params else MAX_NEIGHBOUR_DEGREE
    m = _id_map(value, "ciphertexts", cap)
    return {c: _b64d(v, f"ciphertexts.{c}", CIPHERTEXT_BYTES) for c, v in m.items()}


def _json_loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------- dispatch


def to_wire(msg: Message) -> dict[str, Any]:
    """JSON-able dict of any message (``msg.to_wire()``)."""
    return msg.to_wire()


def from_wire(data: Any, params: RoundParams | None = None, expect: type | None = None) -> Any:
    """Parse a wire dict into its message class, dispatching on ``data["type"]``.

    Args:
        data: decoded JSON.
        params: the round; when given, ``round_id``, vector length and size limits are
            checked against it.
        expect: the message class the caller requires (a different ``type`` raises).

    Raises:
        ProtocolError: on any type, key, length, shape or round mismatch.
    """
    if not isinstance(data, Mapping):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}")
    type_ = data.get("type")
    cls = _TYPES.get(type_) if isinstance(type_, str) else None
    if cls is None:
        raise ProtocolError(f"type: unknown message type {type_!r}", field="type")
    if expect is not None and cls is not expect:
        raise ProtocolError(
            f"type: expected {expect.TYPE!r}, got {type_!r}",  # type: ignore[attr-defined]
            field="type",
        )
    return cls.from_wire(data, params)


def dumps(msg: Message) -> str:
    """Compact JSON text of a message."""
    return json.dumps(msg.to_wire(), separators=(",", ":"))


def loads(text: str | bytes, params: RoundParams | None = None, expect: type | None = None):
    """Parse JSON text into a message (see :func:`from_wire`)."""
    return from_wire(_json_loads(text), params, expect)
