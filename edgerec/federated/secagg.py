"""SecAgg+ secure aggregation (Bonawitz et al., CCS 2017; sparse graph of Bell et al., 2020).

The coordinator learns only the mod-2**32 sum of the surviving devices' uint32 vectors.

Per round, each client ``u`` draws two fresh X25519 key pairs, ``(c_sk, c_pk)`` for
encrypting shares and ``(s_sk, s_pk)`` for pairwise masks, and a 32-byte self-mask seed
``b``. Clients sit on a ring in a pseudorandom order fixed by the public ``round_seed``
(sort by ``SHA-256(round_seed | id)``); each has the ``k/2`` ring neighbours on either
side (``k`` even; the complete graph when the roster has at most ``k + 1`` clients).

1. **advertise**: ``c_pk``, ``s_pk`` and ``b_commit = SHA-256(... | b)``.
2. **share**: ``u`` Shamir-shares ``b`` and ``s_sk`` (threshold ``t``) among its
   neighbours (x coordinate = the holder's id) and sends each neighbour ``v`` one
   AES-256-GCM ciphertext under ``HKDF(X25519(c_sk_u, c_pk_v))`` with associated data
   binding (wire version, round id, sender, receiver).
3. **upload**: ``y_u = x_u + PRG(b_u) + sum_{v in N'(u)} sign(u, v) PRG(s_uv) mod 2**32``
   where ``N'(u)`` are the neighbours whose ciphertexts ``u`` received, ``s_uv =
   HKDF(X25519(s_sk_u, s_pk_v))`` and ``sign = +1 if u < v else -1``; PRG is AES-256-CTR.
4. **unmask**: the server names survivors (uploaded) and dropouts (shared, not
   uploaded); each survivor returns its shares of surviving neighbours' ``b`` and of
   dropped neighbours' ``s_sk`` (never both for one client). The server reconstructs
   (>= t shares each), checks every ``b`` against its commitment and every ``s_sk``
   against the advertised ``s_pk``, removes the masks, and range-checks the result.

All key derivations are HKDF-SHA256 with ``salt = round_seed`` and an ``info`` string
binding the purpose, the wire version, the round id and the client ids involved.

Threat model: honest-but-curious server, clients that may drop out at any point, and a
minority of misbehaving clients whose misbehaviour is *detected* (failed AES-GCM
authentication naming the sender, shares that do not verify naming the holder or dealer,
an aggregate out of range), not prevented. No PKI: the server relays public keys
unauthenticated, so an actively malicious server could impersonate clients to each other
(Bonawitz et al.'s malicious-server variant adds signatures; not implemented).
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edgerec.federated import shamir
from edgerec.federated.errors import (
    DecryptionError,
    ProtocolError,
    SecAggError,
    ShamirError,
)
from edgerec.federated.fixedpoint import to_signed
from edgerec.federated.protocol import (
    CIPHERTEXT_BYTES,
    PLAINTEXT_BYTES,
    WIRE_VERSION,
    Advertisement,
    EncryptedShares,
    KeysBundle,
    MaskedInput,
    PublicKeys,
    RoundParams,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
)

__all__ = [
    "SecAggClient",
    "SecAggServer",
    "b_commitment",
    "neighbours",
    "neighbours_of",
    "prg_uint32",
    "suggest_graph",
]

log = logging.getLogger(__name__)

DOMAIN = b"edgerec/secagg/v%d" % WIRE_VERSION
_NONCE = 12
_MAX_SUBSET_TRIES = 256


# --------------------------------------------------------------------------- primitives


def _u64(cid: int) -> bytes:
    return cid.to_bytes(8, "big")


def _lp(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def _sha256(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    for p in parts:
        h.update(p)
    return h.finalize()


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _pair_info(purpose: bytes, round_id: str, u: int, v: int) -> bytes:
    lo, hi = (u, v) if u < v else (v, u)
    return DOMAIN + b"/" + purpose + _lp(round_id.encode()) + _u64(lo) + _u64(hi)


def _agree(sk: X25519PrivateKey, pk: bytes, peer: int) -> bytes:
    try:
        return sk.exchange(X25519PublicKey.from_public_bytes(pk))
    except ValueError:
        raise ProtocolError(
            f"client {peer}: its public key is invalid (low-order point)", client_id=peer
        ) from None


def _pair_seed(params: RoundParams, s_sk: X25519PrivateKey, s_pk: bytes, u: int, v: int) -> bytes:
    shared = _agree(s_sk, s_pk, v)
    return _hkdf(shared, params.round_seed, _pair_info(b"pair-mask", params.round_id, u, v))


def _enc_key(params: RoundParams, c_sk: X25519PrivateKey, c_pk: bytes, u: int, v: int) -> bytes:
    shared = _agree(c_sk, c_pk, v)
    return _hkdf(shared, params.round_seed, _pair_info(b"share-enc", params.round_id, u, v))


def _self_seed(params: RoundParams, b: bytes, u: int) -> bytes:
    info = DOMAIN + b"/self-mask" + _lp(params.round_id.encode()) + _u64(u)
    return _hkdf(b, params.round_seed, info)


def _share_ad(round_id: str, sender: int, receiver: int) -> bytes:
    return DOMAIN + b"/share" + _lp(round_id.encode()) + _u64(sender) + _u64(receiver)


def b_commitment(round_id: str, client_id: int, b: bytes) -> bytes:
    """Commitment to a self-mask seed: ``SHA-256(domain | round | client | b)``."""
    return _sha256(DOMAIN + b"/commit", _lp(round_id.encode()), _u64(client_id), b)


def prg_uint32(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudorandom uint32 values: AES-256-CTR keystream (zero IV) under ``seed``.

    Every seed is derived for one (round, purpose, clients) tuple and used once.
    """
    enc = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
    stream = enc.update(bytes(4 * length)) + enc.finalize()
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)


def _public_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes_raw()


# --------------------------------------------------------------------------- graph


def neighbours(round_seed: bytes, client_ids: Iterable[int], k: int) -> dict[int, tuple[int, ...]]:
    """The SecAgg+ neighbour graph of a roster (deterministic, public).

    Clients are ordered on a ring by ``SHA-256(domain | round_seed | id)`` and each is
    joined to the ``k/2`` clients on either side. With ``len(ids) <= k + 1`` every client
    is every other's neighbour (classic SecAgg).

    Args:
        round_seed: the round's 32-byte public seed.
        client_ids: the roster (the clients that advertised keys).
        k: neighbour degree (even).

    Returns:
        client id -> sorted tuple of its neighbours' ids.
    """
    ids = sorted(set(client_ids))
    n = len(ids)
    if n - 1 <= k:
        return {c: tuple(x for x in ids if x != c) for c in ids}
    ring = _ring(round_seed, ids, k)
    half = k // 2
    out: dict[int, tuple[int, ...]] = {}
    for i, c in enumerate(ring):
        out[c] = tuple(sorted(ring[(i + j) % n] for j in range(-half, half + 1) if j))
    return out


def neighbours_of(
    round_seed: bytes, client_ids: Iterable[int], k: int, client_id: int
) -> tuple[int, ...]:
    """``neighbours(round_seed, client_ids, k)[client_id]`` without building the graph."""
    ids = sorted(set(client_ids))
    n = len(ids)
    if client_id not in ids:
        raise ValueError(f"client {client_id} is not in the roster")
    if n - 1 <= k:
        return tuple(x for x in ids if x != client_id)
    ring = _ring(round_seed, ids, k)
    i = ring.index(client_id)
    half = k // 2
    return tuple(sorted(ring[(i + j) % n] for j in range(-half, half + 1) if j))


def _ring(round_seed: bytes, ids: list[int], k: int) -> list[int]:
    if k % 2 or k < 2:
        raise ValueError(f"neighbour degree k must be even and >= 2 (got {k})")
    prefix = DOMAIN + b"/graph" + round_seed
    return sorted(ids, key=lambda c: _sha256(prefix, _u64(c)))


def suggest_graph(
    num_clients: int,
    dropout: float,
    failure_probability: float = 1e-6,
    majority: bool = True,
) -> tuple[int, int]:
    """Smallest even degree ``k`` and a threshold ``t`` that tolerate a dropout rate.

    Picks the smallest even ``k`` (up to ``num_clients - 1``) such that, if each client
    independently drops with probability ``dropout``, the chance that *some* client has
    fewer than ``t`` surviving neighbours is at most ``failure_probability`` (union bound
    over clients, exact binomial tail). With ``majority`` (recommended if the server might
    lie about who dropped) ``t = k // 2 + 1``; otherwise ``t`` is the largest threshold
    that still meets the bound, at least ``k // 3 + 1`` (tolerates fewer colluders).
    """
    from math import comb

    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
    alive = 1 - dropout

    def p_fail(k: int, t: int) -> float:  # P(Binomial(k, alive) < t)
        return sum(comb(k, i) * alive**i * dropout ** (k - i) for i in range(t))

    budget = failure_probability / max(1, num_clients)
    top = num_clients - 1 if (num_clients - 1) % 2 == 0 else num_clients - 2
    for k in range(2, max(2, top) + 1, 2):
        if majority:
            t = k // 2 + 1
            if p_fail(k, t) <= budget:
                return k, t
        else:
            for t in range(k, k // 3, -1):
                if t >= 2 and p_fail(k, t) <= budget:
                    return k, t
    raise ValueError(
        f"no degree <= {top} tolerates dropout {dropout} with failure probability "
        f"{failure_probability} for {num_clients} clients"
    )


# --------------------------------------------------------------------------- client


class SecAggClient:
    """One device's side of one SecAgg+ round (a state machine, one method per phase).

    Every phase method is idempotent: calling it again with the same input returns the
    same message (safe retries); a different input raises :class:`ProtocolError`.
    :meth:`export_state` / :meth:`from_state` persist the (secret!) state between phases.

    Args:
        client_id: this device's id in the round (positive int, unique in the round).
        params: the round's parameters.
        randbytes: randomness source (default ``os.urandom``; tests may seed it).
    """

    def __init__(
        self,
        client_id: int,
        params: RoundParams,
        randbytes: Callable[[int], bytes] | None = None,
    ) -> None:
        if not isinstance(client_id, int) or not 1 <= client_id < (1 << 63):
            raise ProtocolError(f"client_id must be an int in 1..2**63-1 (got {client_id!r})")
        self.client_id = client_id
        self.params = params
        self._rb = randbytes or os.urandom
        self._c_sk = X25519PrivateKey.from_private_bytes(self._rb(32))
        self._s_sk = X25519PrivateKey.from_private_bytes(self._rb(32))
        self._b = self._rb(32)
        self.phase = "advertise"
        self._neighbours: tuple[int, ...] = ()
        self._keys: dict[int, PublicKeys] = {}
        self._enc_keys: dict[int, bytes] = {}
        self._t_eff = 0
        self._bundle_wire: dict[str, Any] | None = None
        self._shares_msg: EncryptedShares | None = None
        self._delivery_wire: dict[str, Any] | None = None
        self._holdings: dict[int, tuple[int, int]] = {}
        self._x = np.zeros(0, np.uint32)
        self._masked_msg: MaskedInput | None = None
        self._request_wire: dict[str, Any] | None = None
        self._response: UnmaskResponse | None = None

    def __repr__(self) -> str:
        return f"SecAggClient(id={self.client_id}, round={self.params.round_id!r}, {self.phase})"

    # phase 0 ---------------------------------------------------------------
    def advertise(self) -> Advertisement:
        """Phase 0: this round's public keys and the commitment to the self-mask seed."""
        return Advertisement(
            round_id=self.params.round_id,
            client_id=self.client_id,
            c_pk=_public_bytes(self._c_sk),
            s_pk=_public_bytes(self._s_sk),
            b_commit=b_commitment(self.params.round_id, self.client_id, self._b),
        )

    # phase 1 ---------------------------------------------------------------
    def share_keys(self, bundle: KeysBundle) -> EncryptedShares:
        """Phase 1: encrypt Shamir shares of ``b`` and ``s_sk`` for every neighbour.

        The neighbours are recomputed from ``round_seed`` and ``bundle.roster``; the
        bundle must carry their keys.

        Raises:
            ProtocolError: wrong round/client, roster too small or too big, a neighbour's
                key missing or invalid, or a different bundle than on a previous call.
        """
        p = self.params
        wire = bundle.to_wire()
        if self._bundle_wire is not None:
            if wire != self._bundle_wire:
                raise ProtocolError("share_keys: called again with a different key bundle")
            assert self._shares_msg is not None
            return self._shares_msg
        self._expect_phase("advertise", "share_keys")
        self._check_header(bundle.round_id, bundle.client_id)
        roster = bundle.roster
        if self.client_id not in roster:
            raise ProtocolError(
                f"roster: this client ({self.client_id}) is not in it", field="roster"
            )
        if not p.min_cohort <= len(roster) <= p.cohort_target:
            raise ProtocolError(
                f"roster: {len(roster)} clients, the round needs {p.min_cohort}..{p.cohort_target}",
                field="roster",
            )
        nbrs = neighbours_of(p.round_seed, roster, p.neighbour_degree, self.client_id)
        _, t_eff = p.effective_graph(len(roster))
        missing = [v for v in nbrs if v not in bundle.keys]
        if missing:
            raise ProtocolError(
                f"keys: missing the keys of neighbours {missing[:10]}", field="keys"
            )
        keys = {v: bundle.keys[v] for v in nbrs}
        b_sh = shamir.split(self._b, nbrs, t_eff, self._rb)
        s_sh = shamir.split(self._s_sk.private_bytes_raw(), nbrs, t_eff, self._rb)
        cts: dict[int, bytes] = {}
        for v, bs, ss in zip(nbrs, b_sh, s_sh, strict=True):
            key = self._enc_keys[v] = _enc_key(p, self._c_sk, keys[v].c_pk, self.client_id, v)
            pt = (
                bytes([WIRE_VERSION])
                + _u64(self.client_id)
                + _u64(v)
                + shamir.share_to_bytes(bs.y)
                + shamir.share_to_bytes(ss.y)
            )
            nonce = self._rb(_NONCE)
            ct = nonce + AESGCM(key).encrypt(nonce, pt, _share_ad(p.round_id, self.client_id, v))
            assert len(ct) == CIPHERTEXT_BYTES
            cts[v] = ct
        self._neighbours, self._keys, self._t_eff = nbrs, keys, t_eff
        self._bundle_wire = wire
        self._shares_msg = EncryptedShares(p.round_id, self.client_id, cts)
        self.phase = "upload"
        return self._shares_msg

    # phase 2 ---------------------------------------------------------------
    def masked_input(self, x: np.ndarray, delivery: ShareDelivery) -> MaskedInput:
        """Phase 2: decrypt the shares addressed to this client and mask ``x``.

        Args:
            x: uint32 vector of ``vector_length`` (see :func:`edgerec.federated.dp.privatize`).
            delivery: the ciphertexts the server forwarded (from neighbours that shared).

        Raises:
            DecryptionError: a ciphertext fails AES-GCM authentication (names the sender).
            ProtocolError: wrong round/client, a sender that is not a neighbour, bad ``x``.
            SecAggError: fewer than ``t`` neighbours shared keys (this client's self-mask
                could not be recovered; do not upload).
        """
        p = self.params
        arr = np.asarray(x)
        if arr.dtype != np.uint32 or arr.shape != (p.vector_length,):
            raise ProtocolError(
                f"x: expected uint32 of shape ({p.vector_length},), got {arr.dtype} {arr.shape}"
            )
        wire = delivery.to_wire()
        if self._delivery_wire is not None:
            assert self._masked_msg is not None
            if wire != self._delivery_wire or not np.array_equal(arr, self._x):
                raise ProtocolError("masked_input: called again with different inputs")
            return self._masked_msg
        self._expect_phase("upload", "masked_input")
        self._check_header(delivery.round_id, delivery.client_id)
        nb = set(self._neighbours)
        for sender in delivery.ciphertexts:
            if sender not in nb:
                raise ProtocolError(
                    f"ciphertexts.{sender}: client {sender} is not a neighbour",
                    field=f"ciphertexts.{sender}",
                    client_id=sender,
                )
        if len(delivery.ciphertexts) < self._t_eff:
            raise SecAggError(
                f"only {len(delivery.ciphertexts)} of {len(nb)} neighbours shared keys; "
                f"threshold is {self._t_eff}: not uploading"
            )
        holdings: dict[int, tuple[int, int]] = {}
        for sender, ct in sorted(delivery.ciphertexts.items()):
            holdings[sender] = self._decrypt(sender, ct)
        y = arr.astype(np.uint32, copy=True)
        y += prg_uint32(_self_seed(p, self._b, self.client_id), p.vector_length)
        for v in sorted(holdings):
            m = prg_uint32(
                _pair_seed(p, self._s_sk, self._keys[v].s_pk, self.client_id, v), p.vector_length
            )
            if self.client_id < v:
                y += m
            else:
                y -= m
        self._holdings = holdings
        self._x = arr.copy()
        self._delivery_wire = wire
        self._masked_msg = MaskedInput(p.round_id, self.client_id, y)
        self.phase = "unmask"
        return self._masked_msg

    def _decrypt(self, sender: int, ct: bytes) -> tuple[int, int]:
        p = self.params
        if len(ct) != CIPHERTEXT_BYTES:
            raise ProtocolError(
                f"ciphertexts.{sender}: wrong length {len(ct)}",
                field=f"ciphertexts.{sender}",
                client_id=sender,
            )
        key = self._enc_keys.get(sender)
        if key is None:
            key = _enc_key(p, self._c_sk, self._keys[sender].c_pk, self.client_id, sender)
        try:
            pt = AESGCM(key).decrypt(
                ct[:_NONCE], ct[_NONCE:], _share_ad(p.round_id, sender, self.client_id)
            )
        except InvalidTag:
            raise DecryptionError(
                f"share ciphertext from client {sender} to client {self.client_id} in round "
                f"{p.round_id!r} failed AES-GCM authentication (tampered, re-routed, or not "
                f"encrypted under client {sender}'s advertised key)",
                sender=sender,
                receiver=self.client_id,
            ) from None
        if (
            len(pt) != PLAINTEXT_BYTES
            or pt[0] != WIRE_VERSION
            or pt[1:9] != _u64(sender)
            or pt[9:17] != _u64(self.client_id)
        ):
            raise DecryptionError(
                f"share plaintext from client {sender} has a wrong header",
                sender=sender,
                receiver=self.client_id,
            )
        try:
            b_y = shamir.share_from_bytes(pt[17 : 17 + shamir.SHARE_BYTES])
            s_y = shamir.share_from_bytes(pt[17 + shamir.SHARE_BYTES :])
        except ShamirError as exc:
            raise DecryptionError(
                f"share from client {sender}: {exc}", sender=sender, receiver=self.client_id
            ) from None
        return b_y, s_y

    # phase 3 ---------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Phase 3: reveal shares of surviving neighbours' ``b`` and dropped ones' ``s_sk``.

        Raises:
            ProtocolError: wrong round, this client listed as dropped, or a different
                request than on a previous call (a client answers one request only).
            SecAggError: fewer survivors than ``min_cohort`` (refuses to help unmask).
        """
        p = self.params
        wire = request.to_wire()
        if self._request_wire is not None:
            if wire != self._request_wire:
                raise ProtocolError("unmask: already answered a different unmask request")
            assert self._response is not None
            return self._response
        self._expect_phase("unmask", "unmask")
        self._check_header(request.round_id, self.client_id)
        surv, drop = set(request.survivors), set(request.dropped)
        if surv & drop:
            raise ProtocolError("unmask request lists clients as both survivor and dropped")
        if self.client_id not in surv:
            raise ProtocolError(
                f"survivors: this client ({self.client_id}) uploaded but is not listed",
                field="survivors",
            )
        if len(surv) < p.min_cohort:
            raise SecAggError(
                f"refusing to unmask: {len(surv)} survivors < min cohort {p.min_cohort}"
            )
        b_out: dict[int, bytes] = {}
        s_out: dict[int, bytes] = {}
        for v, (b_y, s_y) in sorted(self._holdings.items()):
            if v in surv:
                b_out[v] = shamir.share_to_bytes(b_y)
            elif v in drop:
                s_out[v] = shamir.share_to_bytes(s_y)
        self._request_wire = wire
        self._response = UnmaskResponse(p.round_id, self.client_id, b_out, s_out)
        self.phase = "done"
        return self._response

    # helpers ---------------------------------------------------------------
    def _expect_phase(self, want: str, method: str) -> None:
        if self.phase != want:
            raise ProtocolError(f"{method}: out of order (client is in phase {self.phase!r})")

    def _check_header(self, round_id: str, client_id: int) -> None:
        if round_id != self.params.round_id:
            raise ProtocolError(
                f"round_id: message for round {round_id!r}, client is in {self.params.round_id!r}",
                field="round_id",
            )
        if client_id != self.client_id:
            raise ProtocolError(
                f"client_id: message addressed to {client_id}, this is {self.client_id}",
                field="client_id",
            )

    def export_state(self) -> dict[str, Any]:
        """JSON-able state, **including secret keys**: store it only on the device."""

        def b64(raw: bytes) -> str:
            return base64.b64encode(raw).decode()

        return {
            "params": self.params.to_wire(),
            "client_id": self.client_id,
            "phase": self.phase,
            "c_sk": b64(self._c_sk.private_bytes_raw()),
            "s_sk": b64(self._s_sk.private_bytes_raw()),
            "b": b64(self._b),
            "bundle": self._bundle_wire,
            "shares": self._shares_msg.to_wire() if self._shares_msg else None,
            "delivery": self._delivery_wire,
            "x": b64(self._x.astype("<u4").tobytes()) if self._delivery_wire else None,
            "holdings": {str(v): [str(b), str(s)] for v, (b, s) in self._holdings.items()},
            "masked": self._masked_msg.to_wire() if self._masked_msg else None,
            "request": self._request_wire,
            "response": self._response.to_wire() if self._response else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SecAggClient:
        """Rebuild a client from :meth:`export_state` output."""
        try:
            params = RoundParams.from_wire(state["params"])
            raw = iter(
                [
                    base64.b64decode(state["c_sk"]),
                    base64.b64decode(state["s_sk"]),
                    base64.b64decode(state["b"]),
                ]
            )
            c = cls(int(state["client_id"]), params, randbytes=lambda n: next(raw))
            c._rb = os.urandom
            if state["bundle"] is not None:
                bundle = KeysBundle.from_wire(state["bundle"], params)
                c._bundle_wire = state["bundle"]
                c._neighbours = neighbours_of(
                    params.round_seed, bundle.roster, params.neighbour_degree, c.client_id
                )
                c._keys = {v: bundle.keys[v] for v in c._neighbours}
                c._t_eff = params.effective_graph(len(bundle.roster))[1]
                c._shares_msg = EncryptedShares.from_wire(state["shares"], params)
            if state["delivery"] is not None:
                c._delivery_wire = state["delivery"]
                c._x = np.frombuffer(base64.b64decode(state["x"]), "<u4").astype(np.uint32)
                c._holdings = {int(v): (int(b), int(s)) for v, (b, s) in state["holdings"].items()}
                c._masked_msg = MaskedInput.from_wire(state["masked"], params)
            if state["request"] is not None:
                c._request_wire = state["request"]
                c._response = UnmaskResponse.from_wire(state["response"], params)
            c.phase = str(state["phase"])
            return c
        except (KeyError, TypeError, ValueError, StopIteration) as exc:
            raise ProtocolError(f"invalid SecAgg client state: {exc}") from None


# --------------------------------------------------------------------------- server


class SecAggServer:
    """The coordinator's side of one round; holds no secrets.

    It is deterministic in the messages it is given, so a coordinator that restarts can
    rebuild it by replaying the stored messages in phase order. Phase transitions are
    explicit: construct (advertisements closed) -> :meth:`add_shares`... ->
    :meth:`close_shares` -> :meth:`add_masked`... -> :meth:`close_inputs` ->
    :meth:`add_unmask_response`... -> :meth:`result`.

    Args:
        params: the round's parameters.
        advertisements: the clients' phase-0 messages (the roster).
        audit_shares: check *every* returned share against the verified polynomial and
            list the holders of bad ones in :attr:`misbehaving` (one polynomial check
            per share, so it costs CPU per secret; benchmarks/RESULTS.md); without it,
            bad shares are found only when they break the first reconstruction (the
            result is correct either way).

    Raises:
        ProtocolError: an advertisement for another round, a duplicated client or key.
        SecAggError: fewer advertisers than ``min_cohort`` or more than ``cohort_target``.
    """

    def __init__(
        self,
        params: RoundParams,
        advertisements: Iterable[Advertisement] | Mapping[int, Advertisement],
        *,
        audit_shares: bool = False,
    ) -> None:
        self.params = params
        self.audit_shares = audit_shares
        ads = list(
            advertisements.values() if isinstance(advertisements, Mapping) else advertisements
        )
        self.adverts: dict[int, Advertisement] = {}
        seen_keys: set[bytes] = set()
        for ad in ads:
            if ad.round_id != params.round_id:
                raise ProtocolError(
                    f"advertisement of client {ad.client_id} is for round {ad.round_id!r}",
                    client_id=ad.client_id,
                )
            if ad.client_id in self.adverts:
                raise ProtocolError(
                    f"client {ad.client_id} advertised twice", client_id=ad.client_id
                )
            if ad.c_pk in seen_keys or ad.s_pk in seen_keys or ad.c_pk == ad.s_pk:
                raise ProtocolError(
                    f"client {ad.client_id} advertised a reused public key", client_id=ad.client_id
                )
            seen_keys.update((ad.c_pk, ad.s_pk))
            self.adverts[ad.client_id] = ad
        n = len(self.adverts)
        if n < params.min_cohort:
            raise SecAggError(
                f"only {n} clients advertised keys; min cohort is {params.min_cohort}"
            )
        if n > params.cohort_target:
            raise SecAggError(
                f"{n} clients advertised keys; cohort target is {params.cohort_target}"
            )
        self.roster: tuple[int, ...] = tuple(sorted(self.adverts))
        self.graph = neighbours(params.round_seed, self.roster, params.neighbour_degree)
        self.k_eff, self.t_eff = params.effective_graph(n)
        self.phase = "shares"
        self._shares: dict[int, dict[int, bytes]] = {}
        self._inputs: dict[int, np.ndarray] = {}
        self._responses: dict[int, UnmaskResponse] = {}
        self.shared: tuple[int, ...] = ()
        self.survivors: tuple[int, ...] = ()
        self.dropped: tuple[int, ...] = ()
        self.misbehaving: dict[int, str] = {}
        self._result = np.zeros(0, np.uint32)
        self._sets: dict[int, tuple[Sequence[int], frozenset[int]]] = {}

    def __repr__(self) -> str:
        return (
            f"SecAggServer(round={self.params.round_id!r}, {self.phase}, "
            f"roster={len(self.roster)}, k={self.k_eff}, t={self.t_eff})"
        )

    # phase 1 ---------------------------------------------------------------
    def keys_for(self, client_id: int) -> KeysBundle:
        """Phase 1 download for ``client_id``: roster plus its neighbours' public keys."""
        self._member(client_id, self.roster, "the roster")
        keys = {v: self.adverts[v].public_keys for v in self.graph[client_id]}
        return KeysBundle(self.params.round_id, client_id, self.roster, keys)

    def add_shares(self, msg: EncryptedShares) -> None:
        """Accept a client's phase-1 ciphertexts (exactly one per neighbour).

        A repeated identical message is ignored (idempotent retry); a different one
        raises :class:`ProtocolError`.
        """
        self._check_round(msg.round_id, msg.client_id)
        cid = msg.client_id
        if cid in self._shares:
            if self._shares[cid] == msg.ciphertexts:
                return
            raise ProtocolError(f"client {cid} already sent different shares", client_id=cid)
        self._expect("shares", "add_shares")
        self._member(cid, self.roster, "the roster")
        want = set(self.graph[cid])
        got = set(msg.ciphertexts)
        if got != want:
            raise ProtocolError(
                f"client {cid} sent ciphertexts for {sorted(got - want)[:5]} (not neighbours) "
                f"and none for {sorted(want - got)[:5]}",
                field="ciphertexts",
                client_id=cid,
            )
        for v, ct in msg.ciphertexts.items():
            if not isinstance(ct, bytes) or len(ct) != CIPHERTEXT_BYTES:
                raise ProtocolError(
                    f"ciphertexts.{v}: must be {CIPHERTEXT_BYTES} bytes",
                    field=f"ciphertexts.{v}",
                    client_id=cid,
                )
        self._shares[cid] = dict(msg.ciphertexts)

    def close_shares(self) -> tuple[int, ...]:
        """End phase 1; returns the clients that shared (they may upload).

        Raises:
            SecAggError: fewer than ``min_cohort`` clients shared.
        """
        self._expect("shares", "close_shares")
        self.shared = tuple(sorted(self._shares))
        if len(self.shared) < self.params.min_cohort:
            self.phase = "failed"
            raise SecAggError(
                f"only {len(self.shared)} clients shared keys; min cohort is "
                f"{self.params.min_cohort}"
            )
        self.phase = "inputs"
        return self.shared

    def delivery_for(self, client_id: int) -> ShareDelivery:
        """Phase 2 download for ``client_id``: ciphertexts from its neighbours that shared."""
        if self.phase in ("shares", "failed"):
            raise ProtocolError("delivery_for: phase 1 is not closed yet")
        self._member(client_id, self.shared, "the clients that shared keys")
        cts = {s: self._shares[s][client_id] for s in self.graph[client_id] if s in self._shares}
        return ShareDelivery(self.params.round_id, client_id, cts)

    # phase 2 ---------------------------------------------------------------
    def add_masked(self, msg: MaskedInput) -> None:
        """Accept a masked input (idempotent for an identical retry)."""
        self._check_round(msg.round_id, msg.client_id)
        cid = msg.client_id
        y = np.asarray(msg.y)
        if y.dtype != np.uint32 or y.shape != (self.params.vector_length,):
            raise ProtocolError(
                f"client {cid}: masked input must be uint32 of shape "
                f"({self.params.vector_length},)",
                field="data",
                client_id=cid,
            )
        if cid in self._inputs:
            if np.array_equal(self._inputs[cid], y):
                return
            raise ProtocolError(
                f"client {cid} already uploaded a different masked input", client_id=cid
            )
        self._expect("inputs", "add_masked")
        self._member(cid, self.shared, "the clients that shared keys")
        self._inputs[cid] = y.copy()

    def close_inputs(self) -> UnmaskRequest:
        """End phase 2; returns the unmask request for every survivor.

        Raises:
            SecAggError: fewer than ``min_cohort`` clients uploaded.
        """
        self._expect("inputs", "close_inputs")
        self.survivors = tuple(sorted(self._inputs))
        self.dropped = tuple(c for c in self.shared if c not in self._inputs)
        if len(self.survivors) < self.params.min_cohort:
            self.phase = "failed"
            raise SecAggError(
                f"only {len(self.survivors)} clients uploaded; min cohort is "
                f"{self.params.min_cohort}"
            )
        self.phase = "unmask"
        return self.unmask_request()

    def unmask_request(self) -> UnmaskRequest:
        """The phase-3 request (same for every survivor)."""
        if self.phase not in ("unmask", "done"):
            raise ProtocolError("unmask_request: phase 2 is not closed yet")
        return UnmaskRequest(self.params.round_id, self.survivors, self.dropped)

    # phase 3 ---------------------------------------------------------------
    def add_unmask_response(self, msg: UnmaskResponse) -> None:
        """Accept a survivor's shares; the key sets must be exactly what it holds."""
        self._check_round(msg.round_id, msg.client_id)
        cid = msg.client_id
        if cid in self._responses:
            if self._responses[cid].to_wire() == msg.to_wire():
                return
            raise ProtocolError(
                f"client {cid} already sent a different unmask response", client_id=cid
            )
        self._expect("unmask", "add_unmask_response")
        self._member(cid, self.survivors, "the survivors")
        surv, drop = set(self.survivors), set(self.dropped)
        want_b = {v for v in self.graph[cid] if v in surv}
        want_s = {v for v in self.graph[cid] if v in drop}
        for name, got, want in (
            ("b_shares", msg.b_shares, want_b),
            ("s_sk_shares", msg.s_sk_shares, want_s),
        ):
            if set(got) != want:
                raise ProtocolError(
                    f"client {cid}: {name} must cover exactly {sorted(want)[:8]}, got "
                    f"{sorted(got)[:8]}",
                    field=name,
                    client_id=cid,
                )
            for v, raw in got.items():
                try:
                    shamir.share_from_bytes(raw)
                except ShamirError as exc:
                    raise ProtocolError(
                        f"client {cid}: {name}.{v}: {exc}", field=f"{name}.{v}", client_id=cid
                    ) from None
        self._responses[cid] = msg

    @property
    def responders(self) -> tuple[int, ...]:
        """Survivors that answered the unmask request so far."""
        return tuple(sorted(self._responses))

    def missing_shares(self) -> dict[int, int]:
        """Clients whose secret still lacks shares -> how many more are needed."""
        out: dict[int, int] = {}
        for owner, kind in self._owners():
            have = sum(
                1
                for r in self.graph[owner]
                if r in self._responses and owner in self._kind(r, kind)
            )
            if have < self.t_eff:
                out[owner] = self.t_eff - have
        return out

    def can_unmask(self) -> bool:
        """Whether every survivor's ``b`` and every dropout's ``s_sk`` has ``t`` shares."""
        return self.phase == "unmask" and not self.missing_shares()

    def result(self) -> np.ndarray:
        """Unmask and return the uint32 sum of the survivors' inputs.

        Raises:
            SecAggError: a secret lacks ``t`` shares (too many dropouts), shares do not
                reconstruct a secret matching the owner's advertisement, or the unmasked
                aggregate is out of the range honest inputs can produce (a client's masks
                or input inconsistent with its advertised keys).
        """
        if self.phase == "done":
            return self._result.copy()
        self._expect("unmask", "result")
        missing = self.missing_shares()
        if missing:
            raise SecAggError(
                f"cannot unmask: {len(missing)} clients' secrets lack shares (need "
                f"{self.t_eff} each; e.g. {dict(list(missing.items())[:5])}); too many "
                f"dropouts ({len(self._responses)} of {len(self.survivors)} survivors "
                f"answered)"
            )
        p = self.params
        total = np.zeros(p.vector_length, np.uint32)
        for cid in self.survivors:
            total += self._inputs[cid]
        for u in self.survivors:
            b = self._recover(
                u,
                "b",
                lambda sec, u=u: hmac.compare_digest(
                    b_commitment(p.round_id, u, sec), self.adverts[u].b_commit
                ),
            )
            total -= prg_uint32(_self_seed(p, b, u), p.vector_length)
        surv = set(self.survivors)
        for v in self.dropped:
            raw = self._recover(
                v,
                "s",
                lambda sec, v=v: hmac.compare_digest(
                    _public_bytes(X25519PrivateKey.from_private_bytes(sec)), self.adverts[v].s_pk
                ),
            )
            s_sk_v = X25519PrivateKey.from_private_bytes(raw)
            for w in self.graph[v]:
                if w not in surv:
                    continue
                m = prg_uint32(_pair_seed(p, s_sk_v, self.adverts[w].s_pk, v, w), p.vector_length)
                if w < v:  # w added +m
                    total -= m
                else:
                    total += m
        bound = len(self.survivors) * p.qmax
        signed = to_signed(total)
        over = int(np.count_nonzero(np.abs(signed) > bound))
        if over:
            self.phase = "failed"
            raise SecAggError(
                f"unmasked aggregate out of range in {over} of {p.vector_length} coordinates "
                f"(bound {bound}): some client's masks or input are inconsistent with its "
                f"advertised keys; releasing nothing",
                culprits=self.misbehaving,
            )
        self._result = total
        self.phase = "done"
        return total.copy()

    def _owners(self) -> list[tuple[int, str]]:
        return [(u, "b") for u in self.survivors] + [(v, "s") for v in self.dropped]

    def _kind(self, responder: int, kind: str) -> Mapping[int, bytes]:
        r = self._responses[responder]
        return r.b_shares if kind == "b" else r.s_sk_shares

    def _recover(self, owner: int, kind: str, verify: Callable[[bytes], bool]) -> bytes:
        what = "self-mask seed" if kind == "b" else "masking key"
        shares = [
            shamir.Share(r, shamir.share_from_bytes(self._kind(r, kind)[owner]))
            for r in self.graph[owner]
            if r in self._responses and owner in self._kind(r, kind)
        ]
        t = self.t_eff
        if not self.audit_shares:  # fast path: the first t shares verify
            try:
                secret = shamir.combine(shares, t)
                if verify(secret):
                    return secret
            except ShamirError:
                pass
        for subset in self._candidate_subsets(owner, shares, t):
            coeffs = shamir.interpolate_poly(subset)
            try:
                secret = shamir.secret_from_int(coeffs[0], 32)
            except ShamirError:
                continue
            if not verify(secret):
                continue
            bad = [s.x for s in shares if shamir.evaluate(coeffs, s.x) != s.y]
            for holder in bad:
                note = (
                    f"sent a share of client {owner}'s {what} that is off the dealt "
                    f"polynomial (holder {holder} or dealer {owner} misbehaved)"
                )
                self.misbehaving.setdefault(holder, note)
                log.warning("round %s: client %s %s", self.params.round_id, holder, note)
            return secret
        self.phase = "failed"
        holders = [s.x for s in shares]
        raise SecAggError(
            f"client {owner}: its {what} cannot be reconstructed from the shares of "
            f"{holders[:10]}: no {t} of them match its advertised "
            f"{'commitment' if kind == 'b' else 'public key'} (client {owner} dealt "
            f"inconsistent shares, or its share holders tampered with them)",
            culprits={owner: f"shares of its {what} do not match its advertisement"},
        )

    def _candidate_subsets(
        self, owner: int, shares: list[shamir.Share], t: int
    ) -> Iterable[tuple[shamir.Share, ...]]:
        """t-subsets to try: the first t, every cyclic window (skips any single bad
        share), then pseudorandom subsets (several bad shares), at most a fixed budget."""
        n = len(shares)
        yield tuple(shares[:t])
        if n == t:
            return
        for i in range(1, n):
            yield tuple(shares[(i + j) % n] for j in range(t))
        rng = np.random.default_rng(
            int.from_bytes(_sha256(self.params.round_seed, _u64(owner))[:8], "big")
        )
        for _ in range(_MAX_SUBSET_TRIES):
            idx = sorted(rng.choice(n, size=t, replace=False).tolist())
            yield tuple(shares[i] for i in idx)

    def _expect(self, want: str, method: str) -> None:
        if self.phase != want:
            raise ProtocolError(f"{method}: out of order (round is in phase {self.phase!r})")

    def _check_round(self, round_id: str, client_id: int) -> None:
        if round_id != self.params.round_id:
            raise ProtocolError(
                f"message from client {client_id} is for round {round_id!r}, "
                f"not {self.params.round_id!r}",
                field="round_id",
                client_id=client_id,
            )

    def _member(self, cid: int, group: Sequence[int], name: str) -> None:
        key = id(group)
        cached = self._sets.get(key)
        if cached is None or cached[0] is not group:
            cached = (group, frozenset(group))
            self._sets[key] = cached
        if cid not in cached[1]:
            raise ProtocolError(f"client {cid} is not in {name}", client_id=cid)
