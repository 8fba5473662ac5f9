"""SQLite implementation of the coordinator storage (stdlib ``sqlite3``).

* WAL journal, ``synchronous=FULL``: a transaction that returned has been fsynced,
  so an upload acknowledged to a device survives ``kill -9`` and power loss.
* One writer connection serialised by a lock (``BEGIN IMMEDIATE``); readers use
  one connection per thread and see a consistent snapshot (WAL readers never
  block the writer).
* ``PRAGMA application_id`` / ``user_version`` mark the file as an edgerec
  coordinator database of a known schema; anything else is refused untouched. The
  tables come from :mod:`.migrations` (shared with PostgreSQL); ``user_version``
  is the version, ``schema_version`` its history.

Schema (version 2)::

    meta(key PK, value)                                    server-wide settings
    devices(device_id PK, token_hash BLOB, enrolled_at, revoked, token_issued_at,
            next_token_hash BLOB, next_token_issued_at, revoked_at, enroll_key_id)
    enroll_keys(key_id PK, key_hash BLOB UNIQUE, label, created_at, quota, used,
                revoked, revoked_at)
    heads(version PK, round_id UNIQUE NULL, created_at, global_bias BLOB float32,
          metadata JSON)
    rounds(round_id PK, base_version, state, params JSON, seed BLOB, opened_at,
           deadline, phase_deadline, closed_at, failure, result_version, info JSON)
    participants(round_id, device_id, client_id, joined_at)
                                                           PK(round, device), UNIQUE(round, client)
    messages(round_id, device_id, phase, digest, payload JSON, blob BLOB,
             response JSON, received_at)                   PK(round, device, phase)
    ciphertexts(round_id, sender, recipient, ciphertext)   PK(round, sender, recipient)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .fleet_sql import FleetQueries
from .migrations import (
    LATEST,
    MIGRATIONS,
    VERSION_TABLE,
    Migration,
    pending,
    require_current,
)
from .storage import (
    FINAL_STATES,
    Head,
    Message,
    Participant,
    Round,
    Storage,
    StorageError,
    Transaction,
    dumps,
)

log = logging.getLogger(__name__)

APPLICATION_ID = 0x45524344  # "ERCD"
#: the schema this code writes (``PRAGMA user_version`` mirrors ``schema_version``)
SCHEMA_VERSION = LATEST

_ROUND_COLUMNS = (
    "round_id, base_version, state, params, seed, opened_at, deadline, phase_deadline, "
    "closed_at, failure, result_version, info"
)
_UPDATABLE = {
    "state",
    "phase_deadline",
    "closed_at",
    "failure",
    "result_version",
    "info",
    "deadline",
}


class SqliteTransaction(FleetQueries, Transaction):
    """:class:`Transaction` over one ``sqlite3`` connection."""

    MARK = "?"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._depth = 0

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._depth += 1
        name = f"sp{self._depth}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        else:
            self.conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        return self.conn.execute(sql, params).fetchone()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- devices ------------------------------------------------------------------------
    def count_devices(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM devices WHERE revoked = 0")[0])

    def device_ids_enrolled_by(self, when: float) -> list[str]:
        rows = self.conn.execute(
            "SELECT device_id FROM devices WHERE revoked = 0 AND enrolled_at <= ?", (when,)
        )
        return [r[0] for r in rows]

    # -- heads --------------------------------------------------------------------------
    def insert_head(self, head: Head) -> None:
        bias = np.ascontiguousarray(head.global_bias, dtype="<f4")
        self.conn.execute(
            "INSERT INTO heads(version, round_id, created_at, global_bias, metadata) "
            "VALUES (?,?,?,?,?)",
            (head.version, head.round_id, head.created_at, bias.tobytes(), dumps(head.metadata)),
        )

    @staticmethod
    def _head(row: tuple | None) -> Head | None:
        if row is None:
            return None
        bias = np.frombuffer(row[3], dtype="<f4").astype(np.float32)
        return Head(row[0], row[1], row[2], bias, json.loads(row[4]))

    def latest_head(self) -> Head | None:
        return self._head(
            self._one(
                "SELECT version, round_id, created_at, global_bias, metadata FROM heads "
                "ORDER BY version DESC LIMIT 1"
            )
        )

    def get_head(self, version: int) -> Head | None:
        return self._head(
            self._one(
                "SELECT version, round_id, created_at, global_bias, metadata FROM heads "
                "WHERE version = ?",
                (version,),
            )
        )

    # -- rounds -------------------------------------------------------------------------
    @staticmethod
    def _round(row: tuple | None) -> Round | None:
        if row is None:
            return None
        return Round(
            round_id=row[0],
            base_version=row[1],
            state=row[2],
            params=json.loads(row[3]),
            seed=bytes(row[4]),
            opened_at=row[5],
            deadline=row[6],
            phase_deadline=row[7],
            closed_at=row[8],
            failure=row[9],
            result_version=row[10],
            info=json.loads(row[11]),
        )

    def insert_round(self, rnd: Round) -> int:
        cur = self.conn.execute(
            "INSERT INTO rounds(base_version, state, params, seed, opened_at, deadline, "
            "phase_deadline, info) VALUES (?,?,?,?,?,?,?,?)",
            (
                rnd.base_version,
                rnd.state,
                dumps(rnd.params),
                rnd.seed,
                rnd.opened_at,
                rnd.deadline,
                rnd.phase_deadline,
                dumps(rnd.info),
            ),
        )
        return int(cur.lastrowid)

    def get_round(self, round_id: int) -> Round | None:
        return self._round(
            self._one(f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE round_id = ?", (round_id,))
        )

    def round_state(self, round_id: int) -> str | None:
        row = self._one("SELECT state FROM rounds WHERE round_id = ?", (round_id,))
        return None if row is None else row[0]

    def active_round(self) -> Round | None:
        marks = ",".join("?" * len(FINAL_STATES))
        return self._round(
            self._one(
                f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE state NOT IN ({marks}) "
                "ORDER BY round_id DESC LIMIT 1",
                FINAL_STATES,
            )
        )

    def latest_round(self) -> Round | None:
        return self._round(
            self._one(f"SELECT {_ROUND_COLUMNS} FROM rounds ORDER BY round_id DESC LIMIT 1")
        )

    def list_rounds(self, limit: int = 50, state: str | None = None) -> list[Round]:
        where, args = ("WHERE state = ?", (state,)) if state is not None else ("", ())
        rows = self.conn.execute(
            f"SELECT {_ROUND_COLUMNS} FROM rounds {where} ORDER BY round_id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [r for r in map(self._round, rows) if r is not None]

    def count_rounds(self, state: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM rounds WHERE state = ?", (state,))[0])

    def update_round(self, round_id: int, expect_state: str, **changes: Any) -> bool:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update round column(s) {sorted(unknown)}")
        if "info" in changes:
            changes["info"] = dumps(changes["info"])
        sets = ", ".join(f"{k} = ?" for k in changes)
        cur = self.conn.execute(
            f"UPDATE rounds SET {sets} WHERE round_id = ? AND state = ?",
            (*changes.values(), round_id, expect_state),
        )
        return cur.rowcount == 1

    # -- participants and messages ------------------------------------------------------
    def add_participant(
        self, round_id: int, device_id: str, client_id: int, now: float
    ) -> Participant:
        self.conn.execute(
            "INSERT INTO participants(round_id, device_id, client_id, joined_at) VALUES (?,?,?,?)",
            (round_id, device_id, client_id, now),
        )
        return Participant(round_id, device_id, client_id, now)

    def participant_by_client(self, round_id: int, client_id: int) -> Participant | None:
        row = self._one(
            "SELECT round_id, device_id, client_id, joined_at FROM participants "
            "WHERE round_id = ? AND client_id = ?",
            (round_id, client_id),
        )
        return None if row is None else Participant(*row)

    def get_participant(self, round_id: int, device_id: str) -> Participant | None:
        row = self._one(
            "SELECT round_id, device_id, client_id, joined_at FROM participants "
            "WHERE round_id = ? AND device_id = ?",
            (round_id, device_id),
        )
        return None if row is None else Participant(*row)

    def participants(self, round_id: int) -> list[Participant]:
        rows = self.conn.execute(
            "SELECT round_id, device_id, client_id, joined_at FROM participants "
            "WHERE round_id = ? ORDER BY client_id",
            (round_id,),
        ).fetchall()
        return [Participant(*r) for r in rows]

    def insert_message(self, message: Message) -> None:
        self.conn.execute(
            "INSERT INTO messages(round_id, device_id, phase, digest, payload, blob, response, "
            "received_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                message.round_id,
                message.device_id,
                message.phase,
                message.digest,
                dumps(message.payload),
                message.blob,
                dumps(message.response),
                message.received_at,
            ),
        )

    @staticmethod
    def _message(row: tuple) -> Message:
        return Message(
            round_id=row[0],
            device_id=row[1],
            phase=row[2],
            digest=row[3],
            payload=json.loads(row[4]),
            blob=None if row[5] is None else bytes(row[5]),
            response=json.loads(row[6]),
            received_at=row[7],
        )

    def get_message(self, round_id: int, device_id: str, phase: str) -> Message | None:
        row = self._one(
            "SELECT round_id, device_id, phase, digest, payload, blob, response, received_at "
            "FROM messages WHERE round_id = ? AND device_id = ? AND phase = ?",
            (round_id, device_id, phase),
        )
        return None if row is None else self._message(row)

    def messages(self, round_id: int, phase: str, with_blob: bool = True) -> list[Message]:
        blob = "blob" if with_blob else "NULL"
        rows = self.conn.execute(
            f"SELECT round_id, device_id, phase, digest, payload, {blob}, response, received_at "
            "FROM messages WHERE round_id = ? AND phase = ? ORDER BY received_at, device_id",
            (round_id, phase),
        ).fetchall()
        return [self._message(r) for r in rows]

    def count_messages(self, round_id: int, phase: str) -> int:
        return int(
            self._one(
                "SELECT COUNT(*) FROM messages WHERE round_id = ? AND phase = ?",
                (round_id, phase),
            )[0]
        )

    def insert_ciphertexts(self, round_id: int, sender: int, items: dict[int, str]) -> None:
        self.conn.executemany(
            "INSERT INTO ciphertexts(round_id, sender, recipient, ciphertext) VALUES (?,?,?,?)",
            [(round_id, sender, int(r), ct) for r, ct in items.items()],
        )

    def ciphertexts_for(self, round_id: int, recipient: int) -> dict[int, str]:
        rows = self.conn.execute(
            "SELECT sender, ciphertext FROM ciphertexts WHERE round_id = ? AND recipient = ? "
            "ORDER BY sender",
            (round_id, recipient),
        ).fetchall()
        return {int(s): c for s, c in rows}


class SqliteStorage(Storage):
    """SQLite :class:`Storage` (see the module docstring).

    Args:
        path: database file (created with its folders) or ``":memory:"``.
        url: the URL it was opened from (for messages and ``status``).
        busy_timeout: seconds to wait for another process's write lock (the CLI
            may write while the server runs).
        synchronous: ``"full"`` (default: an acknowledged upload survives power loss)
            or ``"normal"`` (survives a process crash only; for simulations). URL
            form: ``sqlite:///path.db?synchronous=normal``.
        migrate: upgrade a database at an older schema version (``edgerec
            coordinator migrate``); without it such a database is refused.
        steps: the schema migrations (tests pass their own).
    """

    def __init__(
        self,
        path: str | Path,
        url: str | None = None,
        busy_timeout: float = 10.0,
        synchronous: str = "full",
        migrate: bool = False,
        steps: Sequence[Migration] = MIGRATIONS,
    ):
        if synchronous not in ("full", "normal"):
            raise StorageError(f"synchronous must be 'full' or 'normal' (got {synchronous!r})")
        self.synchronous = synchronous.upper()
        self.memory = str(path) == ":memory:"
        self.path = Path(path)
        self.url = url or f"sqlite:///{path}"
        self._busy = float(busy_timeout)
        self._wlock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._rlist_lock = threading.Lock()
        self._closed = False
        self._migrate = migrate
        self._steps = tuple(steps)
        self.schema_found: int | None = None  # version before opening (None: created)
        self.schema_version = 0
        if not self.memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = self._connect()
        try:
            self._init_schema()
        except BaseException:
            self._wconn.close()
            raise

    # -- connections --------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        target = ":memory:" if self.memory else str(self.path)
        try:
            conn = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, timeout=self._busy
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy * 1000)}")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.url}: cannot open the database ({exc})") from None
        return conn

    def _init_schema(self) -> None:
        conn = self._wconn
        try:  # inspect first: a foreign file must be left exactly as it was
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = [
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")
            ]
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.url}: not a usable SQLite database ({exc})") from None
        new = app_id == 0 and version == 0 and not tables
        if not new and app_id != APPLICATION_ID:
            raise StorageError(
                f"{self.url}: a SQLite database that is not an edgerec coordinator database "
                f"(application_id={app_id}); point --db at a new or coordinator file"
            )
        todo = pending(self.url, version, self._steps)
        if todo and not new and not self._migrate:
            require_current(self.url, version, self._steps)
        self.schema_found = None if new else version
        if not self.memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.url}: cannot switch the database to WAL ({mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        if todo or "schema_version" not in tables:
            self._apply(todo, adopt=None if new else version)
        self.schema_version = todo[-1].version if todo else version
        if new:
            log.info("created coordinator database %s", self.url)

    def _apply(self, steps: list[Migration], adopt: int | None) -> None:
        """Run ``steps`` in one transaction; record them (and an adopted old version)."""
        conn = self._wconn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(VERSION_TABLE["sqlite"])
            if adopt:  # a file from before the version table: record what it already is
                conn.execute(
                    "INSERT OR IGNORE INTO schema_version VALUES (?, ?, ?)",
                    (adopt, "recorded from PRAGMA user_version", time.time()),
                )
            for step in steps:
                for stmt in step.statements("sqlite"):
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    (step.version, step.description, time.time()),
                )
                log.info("%s: schema version %d (%s)", self.url, step.version, step.description)
            if steps:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {steps[-1].version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _reader(self) -> sqlite3.Connection:
        if self.memory:
            return self._wconn
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._rlist_lock:
                self._readers.append(conn)
        return conn

    # -- transactions -------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[SqliteTransaction]:
        self._check_open()
        with self._wlock:
            conn = self._wconn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTransaction(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[SqliteTransaction]:
        self._check_open()
        if self.memory:  # one connection: reads share the writer's lock
            with self._wlock:
                yield SqliteTransaction(self._wconn)
            return
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield SqliteTransaction(conn)
        finally:
            conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.url}: storage is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._rlist_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._wlock:
            self._wconn.close()
