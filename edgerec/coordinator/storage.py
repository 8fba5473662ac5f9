"""The coordinator's storage interface, keyed by a database URL.

Everything the coordinator must not lose lives behind :class:`Storage`: enrolled
devices (hashed tokens), head versions (``global_bias`` + DP metadata), rounds and
every accepted phase message of every device. The service keeps no state of its
own that a restart would need, so ``kill -9`` loses nothing that was acknowledged.

Work happens in transactions::

    with storage.write() as tx:          # one serialised write transaction
        rnd = tx.get_round(round_id)     # read inside it: consistent with the write
        tx.insert_message(...)
    with storage.read() as tx:           # a consistent read-only snapshot
        head = tx.latest_head()

:func:`open_storage` picks the implementation from the URL scheme:
``sqlite:///path`` (:mod:`.sqlite`, the embedded default) or
``postgresql://user@host/db`` (:mod:`.postgres`). Both create their tables from
the shared, versioned schema in :mod:`.migrations`.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerec.errors import InputError

#: round states, in the order a successful round passes them
PHASES = ("advertise", "share", "upload", "unmask")
DONE = "done"
FAILED = "failed"
FINAL_STATES = (DONE, FAILED)


@dataclass(frozen=True)
class Device:
    """An enrolled device. ``token_hash`` is SHA-256 of its bearer token.

    ``token_issued_at`` dates that token (it expires ``token_ttl_s`` later; None: a
    token from before expiry existed, treated as issued at enrollment).
    ``next_token_hash`` is a rotated successor the device has not used yet: both
    tokens work until the device's first request with the new one promotes it (see
    :mod:`.devices`). ``enroll_key_id`` names the database enrollment key it used.
    """

    device_id: str
    token_hash: bytes
    enrolled_at: float
    revoked: bool = False
    token_issued_at: float | None = None
    next_token_hash: bytes | None = None
    next_token_issued_at: float | None = None
    revoked_at: float | None = None
    enroll_key_id: str | None = None


@dataclass(frozen=True)
class EnrollKey:
    """An enrollment key kept in the database (only its SHA-256 is stored).

    ``quota`` is how many devices may enroll with it (None: no limit), ``used`` how
    many did; a revoked key enrolls nobody.
    """

    key_id: str
    key_hash: bytes
    label: str
    created_at: float
    quota: int | None = None
    used: int = 0
    revoked: bool = False
    revoked_at: float | None = None

    @property
    def usable(self) -> bool:
        return not self.revoked and (self.quota is None or self.used < self.quota)


@dataclass(frozen=True)
class Head:
    """One published version of the shared ``global_bias`` (float32 ``[n]``)."""

    version: int
    round_id: int | None
    created_at: float
    global_bias: np.ndarray
    metadata: dict[str, Any]


#: states of a candidate head (see :class:`Candidate`)
PENDING, PUBLISHED, REJECTED = "pending", "published", "rejected"


@dataclass(frozen=True)
class Candidate:
    """A training round's result waiting for its federated evaluation.

    ``metadata`` is what the head's metadata will say when it is published; ``state``
    is ``pending`` until an evaluation round (``evaluation_round``) decides it
    ``published`` or ``rejected``, with that round's verdict in ``evaluation``.
    """

    round_id: int
    base_version: int
    created_at: float
    global_bias: np.ndarray
    metadata: dict[str, Any]
    state: str = PENDING
    evaluation_round: int | None = None
    decided_at: float | None = None
    evaluation: dict[str, Any] | None = None


@dataclass(frozen=True)
class Round:
    """A federated round and where it stands.

    ``state`` is one of :data:`PHASES` while the round runs, then ``done`` or
    ``failed``. ``params`` is the JSON of the round's protocol parameters;
    ``seed`` is a server-side secret (cohort selection, neighbour graph).
    """

    round_id: int
    base_version: int
    state: str
    params: dict[str, Any]
    seed: bytes
    opened_at: float
    deadline: float
    phase_deadline: float
    closed_at: float | None = None
    failure: str | None = None
    result_version: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state not in FINAL_STATES


@dataclass(frozen=True)
class Participant:
    """A device that advertised keys in a round under SecAgg client id ``client_id``."""

    round_id: int
    device_id: str
    client_id: int
    joined_at: float


@dataclass(frozen=True)
class Message:
    """One accepted phase message of one device in one round.

    ``payload`` is the validated JSON body (binary fields still base64) except
    the bulky vector of an ``upload``, kept raw in ``blob``. ``digest`` is the
    SHA-256 of the canonical request: a retry with the same digest gets
    ``response`` again, anything else is refused.
    """

    round_id: int
    device_id: str
    phase: str
    digest: str
    payload: dict[str, Any]
    blob: bytes | None
    response: dict[str, Any]
    received_at: float


@dataclass
class BatchSnapshot:
    """What a group commit reads before it checks its messages, per ``(round, phase)``
    group: each round's state (None: no such round), the devices' earlier messages of
    that phase (without blobs) by device, and how many messages the phase holds."""

    states: dict[int, str | None]
    messages: dict[tuple[int, str], dict[str, Message]]
    counts: dict[tuple[int, str], int]


class StorageError(InputError):
    """A database URL or file the coordinator cannot use."""


class Transaction(ABC):
    """The operations of one transaction (see the module docstring)."""

    @abstractmethod
    def savepoint(self) -> AbstractContextManager[None]:
        """A nested transaction: an exception inside undoes only its own writes.

        Lets one write transaction carry several requests (group commit) where a
        refused request must leave no trace while the others still commit.
        """

    # -- meta ---------------------------------------------------------------------------
    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    # -- devices ------------------------------------------------------------------------
    @abstractmethod
    def insert_device(self, device: Device) -> None: ...

    @abstractmethod
    def get_device(self, device_id: str) -> Device | None: ...

    @abstractmethod
    def count_devices(self) -> int: ...

    @abstractmethod
    def device_ids_enrolled_by(self, when: float) -> list[str]:
        """Ids of the devices (not revoked) enrolled at or before ``when``."""

    # -- fleet lifecycle (one implementation for both backends: :mod:`.fleet_sql`) -------
    @abstractmethod
    def list_devices(self, limit: int = 1000) -> list[Device]: ...

    @abstractmethod
    def revoke_device(self, device_id: str, now: float) -> bool:
        """Revoke a device; False when it is unknown or already revoked."""

    @abstractmethod
    def set_next_token(self, device_id: str, token_hash: bytes, now: float) -> None:
        """Record a rotated successor token (replacing an unused earlier one)."""

    @abstractmethod
    def promote_next_token(self, device_id: str, token_hash: bytes) -> bool:
        """Make the successor ``token_hash`` the device's token (the old one stops working)."""

    @abstractmethod
    def participation(self, device_id: str | None = None) -> list[tuple[str, int]]:
        """``(device_id, round_id)`` of the published rounds each device's update is in."""

    @abstractmethod
    def insert_enroll_key(self, key: EnrollKey) -> None: ...

    @abstractmethod
    def get_enroll_key(self, key_id: str) -> EnrollKey | None: ...

    @abstractmethod
    def enroll_key_by_hash(self, key_hash: bytes) -> EnrollKey | None: ...

    @abstractmethod
    def list_enroll_keys(self) -> list[EnrollKey]: ...

    @abstractmethod
    def count_usable_enroll_keys(self) -> int: ...

    @abstractmethod
    def use_enroll_key(self, key_id: str) -> bool:
        """Count one enrollment; False when the key is revoked or its quota is used up."""

    @abstractmethod
    def revoke_enroll_key(self, key_id: str, now: float) -> bool: ...

    # -- heads --------------------------------------------------------------------------
    @abstractmethod
    def insert_head(self, head: Head) -> None: ...

    @abstractmethod
    def latest_head(self) -> Head | None: ...

    @abstractmethod
    def get_head(self, version: int) -> Head | None: ...

    # -- candidates (federated evaluation) ----------------------------------------------
    @abstractmethod
    def insert_candidate(self, candidate: Candidate) -> None: ...

    @abstractmethod
    def get_candidate(self, round_id: int) -> Candidate | None: ...

    @abstractmethod
    def pending_candidate(self) -> Candidate | None:
        """The oldest undecided candidate (at most one exists: rounds run one at a time)."""

    @abstractmethod
    def latest_decided_candidate(self) -> Candidate | None: ...

    @abstractmethod
    def decide_candidate(
        self,
        round_id: int,
        state: str,
        evaluation_round: int | None,
        now: float,
        evaluation: dict,
    ) -> bool:
        """Record the decision on a pending candidate; False if it was not pending."""

    # -- rounds -------------------------------------------------------------------------
    @abstractmethod
    def insert_round(self, rnd: Round) -> int:
        """Store a new round (``rnd.round_id`` is ignored); return its id."""

    @abstractmethod
    def get_round(self, round_id: int) -> Round | None: ...

    @abstractmethod
    def round_state(self, round_id: int) -> str | None:
        """Just the state of a round (cheap: checked on every device message)."""

    @abstractmethod
    def active_round(self) -> Round | None:
        """The round that is not ``done``/``failed`` (at most one), if any."""

    @abstractmethod
    def latest_round(self) -> Round | None: ...

    @abstractmethod
    def list_rounds(self, limit: int = 50, state: str | None = None) -> list[Round]:
        """Newest first; only rounds in ``state`` when given."""

    @abstractmethod
    def count_rounds(self, state: str) -> int: ...

    @abstractmethod
    def update_round(self, round_id: int, expect_state: str, **changes: Any) -> bool:
        """Compare-and-set: apply ``changes`` only if the round is in ``expect_state``.

        Returns False (and changes nothing) when the state differs, which is how
        a round can never be advanced, applied or failed twice.
        """

    # -- participants and messages ------------------------------------------------------
    @abstractmethod
    def add_participant(
        self, round_id: int, device_id: str, client_id: int, now: float
    ) -> Participant:
        """Record that ``device_id`` joined the round as SecAgg client ``client_id``."""

    @abstractmethod
    def participant_by_client(self, round_id: int, client_id: int) -> Participant | None: ...

    @abstractmethod
    def get_participant(self, round_id: int, device_id: str) -> Participant | None: ...

    @abstractmethod
    def participants(self, round_id: int) -> list[Participant]: ...

    @abstractmethod
    def insert_message(self, message: Message) -> None: ...

    @abstractmethod
    def get_message(self, round_id: int, device_id: str, phase: str) -> Message | None: ...

    @abstractmethod
    def messages(self, round_id: int, phase: str, with_blob: bool = True) -> list[Message]: ...

    @abstractmethod
    def count_messages(self, round_id: int, phase: str) -> int: ...

    # -- batch forms: one query for a group commit's messages (defaults loop) -----------
    def messages_of(
        self, round_id: int, phase: str, device_ids: Sequence[str], with_blob: bool = False
    ) -> dict[str, Message]:
        """The stored ``phase`` messages of ``device_ids`` in the round, by device; without
        their blobs (what an idempotency check needs) unless ``with_blob``."""
        found = {d: self.get_message(round_id, d, phase) for d in device_ids}
        return {
            d: m if with_blob or m is None else dataclasses.replace(m, blob=None)
            for d, m in found.items()
            if m is not None
        }

    @abstractmethod
    def prefetch(self, groups: dict[tuple[int, str], list[str]]) -> BatchSnapshot:
        """Everything a group commit of ``groups`` (``(round, phase) -> device ids``)
        reads before it checks the messages (see :class:`BatchSnapshot`); the devices'
        participations are remembered for :meth:`get_participant`. A backend may send
        it all at once."""

    def send_message(self, message: Message) -> None:
        """Store a message whose outcome nothing reads before the commit; a client/server
        backend sends it without waiting for the reply (an error surfaces at the latest
        when the transaction commits, failing it whole)."""
        self.insert_message(message)

    def message_device_ids(self, round_id: int, phase: str) -> list[str]:
        """The devices whose ``phase`` message of the round is stored (ids only)."""
        return [m.device_id for m in self.messages(round_id, phase, with_blob=False)]

    @abstractmethod
    def insert_ciphertexts(self, round_id: int, sender: int, items: dict[int, str]) -> None:
        """Store the encrypted shares ``{recipient: base64 ciphertext}`` of client ``sender``."""

    @abstractmethod
    def ciphertexts_for(self, round_id: int, recipient: int) -> dict[int, str]:
        """Encrypted shares addressed to client ``recipient``: ``{sender: ciphertext}``."""


class Storage(ABC):
    """A database of the coordinator's state (see the module docstring)."""

    url: str
    #: schema version of the open database, and the one it had before opening
    #: (None: this open created it); see :mod:`.migrations`
    schema_version: int
    schema_found: int | None
    #: set by :meth:`close`; see :meth:`_check_open`
    _closed: bool = False
    #: other coordinator processes write to this database too (:meth:`share`)
    shared: bool = False

    @abstractmethod
    def write(self) -> AbstractContextManager[Transaction]:
        """A serialised write transaction; committed durably when the block exits."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only snapshot transaction."""

    def read_single(self) -> AbstractContextManager[Transaction]:
        """For a read of one statement (e.g. a device's token check on every request):
        a backend may skip the transaction's own round trips. Same as :meth:`read`
        unless overridden."""
        return self.read()

    @abstractmethod
    def close(self) -> None: ...

    def serve_lock(self) -> AbstractContextManager[None]:
        """Held by ``edgerec coordinator serve`` for its life; refuses a second server.

        The SQLite server holds a lock file beside the database instead, so the
        default is no lock; the PostgreSQL storage holds an advisory lock.
        """
        return nullcontext()

    def share(self) -> None:
        """Declare that several coordinator processes serve this database.

        The round engine then syncs its cached SecAgg state with the database before
        using it and closes phases under :meth:`exclusive`. Only a server database
        (PostgreSQL) can be shared; SQLite is one process per file.
        """
        raise StorageError(
            f"{self.url}: several coordinator processes need a PostgreSQL database; "
            "SQLite is served by one process (it keeps its lock file)"
        )

    def exclusive(self) -> AbstractContextManager[Any]:
        """A section in which this thread alone writes to the database, across every
        process serving it; :meth:`write` blocks inside it join it.

        One process needs nothing beyond the engine's own lock, so the default is a
        no-op; a shared PostgreSQL database holds its writer lock for the section.
        """
        return nullcontext()

    def _check_open(self) -> None:
        """Refuse work on a closed storage with an error that names it."""
        if self._closed:
            raise StorageError(f"{self.url}: storage is closed")

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_storage(url: str, migrate: bool = False) -> Storage:
    """Open (creating if needed) the storage named by ``url``; the scheme picks the backend.

    Supported: ``sqlite:///relative/or/absolute/path.db`` (``sqlite:////abs/path``
    also works), ``sqlite://:memory:`` (tests), a plain file path, or
    ``postgresql://user:password@host:port/dbname`` (``postgres://`` too; see
    :mod:`.postgres`). The query ``?synchronous=normal`` trades power-loss
    durability for speed (simulations). ``migrate`` upgrades a database at an
    older schema version (``edgerec coordinator migrate``); without it such a
    database is refused with an error that says so.
    """
    base, _, query = url.partition("?")
    if base.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        return PostgresStorage(url, migrate=migrate)

    from .sqlite import SqliteStorage

    options = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise StorageError(f"database URL {url!r}: unknown option(s) {sorted(unknown)}")
    sync = options.get("synchronous", "full")
    if base.startswith("sqlite://"):
        rest = base[len("sqlite://") :]
        if rest in (":memory:", "/:memory:"):
            return SqliteStorage(":memory:", url=url, synchronous=sync, migrate=migrate)
        if not rest.startswith("/"):
            raise StorageError(f"database URL {url!r}: use sqlite:///path/to/file.db")
        return SqliteStorage(rest[1:] or ":memory:", url=url, synchronous=sync, migrate=migrate)
    if "://" in base:
        scheme = base.split("://", 1)[0]
        raise StorageError(
            f"database URL {url!r}: scheme {scheme!r} is not supported "
            "(use sqlite:///path/to/file.db or postgresql://user@host/dbname)"
        )
    return SqliteStorage(base, url=f"sqlite:///{base}", synchronous=sync, migrate=migrate)


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces) used for payloads and digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
