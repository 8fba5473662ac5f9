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
* The queries are :mod:`.sql_transaction`'s (shared with PostgreSQL).

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

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .migrations import LATEST, MIGRATIONS, VERSION_TABLE, Migration, pending, require_current
from .sql_transaction import SqlTransaction
from .storage import Storage, StorageError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x45524344  # "ERCD"
#: the schema this code writes (``PRAGMA user_version`` mirrors ``schema_version``)
SCHEMA_VERSION = LATEST


class SqliteTransaction(SqlTransaction):
    """:class:`~.sql_transaction.SqlTransaction` over one ``sqlite3`` connection."""

    dialect = "sqlite"
    log = log

    def _insert_returning_id(self, sql: str, params: tuple, id_column: str) -> int:
        return int(self._execute(sql, params).lastrowid)


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
            SqliteTransaction(conn).apply_migrations(steps, self.url)
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
