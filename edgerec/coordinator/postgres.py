"""PostgreSQL implementation of the coordinator storage (``psycopg`` 3 + a pool).

Same semantics as :mod:`.sqlite`, query for query:

* A write transaction first takes a transaction-scoped advisory lock
  (``pg_advisory_xact_lock``), so writers are serialised across every process on
  the database exactly as SQLite's ``BEGIN IMMEDIATE`` serialises them; a process
  also serialises its own writers with a lock, so at most one pooled connection
  per process waits on the database lock. Writes run at READ COMMITTED, which
  with serialised writers sees every committed row.
* Reads run in ``REPEATABLE READ READ ONLY`` transactions: one consistent
  snapshot, never blocking the writer (like SQLite WAL readers).
* ``COMMIT`` returns after the WAL is flushed (``synchronous_commit = on``, the
  server default), so an acknowledged upload survives ``kill -9`` of the
  coordinator and of the database server. ``?synchronous=normal`` sets
  ``synchronous_commit = off`` (survives a coordinator crash only; simulations).
* Idempotent and conflict-checked messages rest on the same primary keys.
* The tables come from :mod:`.migrations`; ``schema_version`` holds the version.
  Applying migrations takes a session advisory lock, so two processes starting
  on a new database create it once.

URL: ``postgresql://user:password@host:port/dbname?sslmode=...`` — every libpq
parameter passes through, plus ``synchronous`` (``full``/``normal``) and
``pool_max`` (connections per process, default 8).

One ``serve`` process per database for now: the round engine caches SecAgg state
in memory, so :meth:`PostgresStorage.serve_lock` refuses a second server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from .fleet_sql import FleetQueries
from .migrations import (
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

#: advisory-lock keys (two int4: the application "ERCD", then the purpose)
_APP = 0x45524344
_WRITE_LOCK = 1
_MIGRATE_LOCK = 2
_SERVE_LOCK = 3

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
_OWN_OPTIONS = ("synchronous", "pool_max")


def _require_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise StorageError(
            "PostgreSQL storage needs psycopg 3 and psycopg-pool: "
            "pip install 'edgerec[coordinator]'"
        ) from None
    return psycopg


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """``(libpq conninfo URL, edgerec options)``: our own query options taken out."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_OPTIONS}
    rest = [(k, v) for k, v in query if k not in _OWN_OPTIONS]
    scheme = "postgresql"  # libpq accepts postgresql:// and postgres://
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), "")), own


def redact(url: str) -> str:
    """``url`` without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresTransaction(FleetQueries, Transaction):
    """:class:`Transaction` over one ``psycopg`` connection (autocommit off by hand)."""

    MARK = "%s"

    def __init__(self, conn: Any) -> None:
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
            self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            self.conn.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        return self.conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (%s, %s) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- devices ------------------------------------------------------------------------
    def count_devices(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM devices WHERE revoked = 0")[0])

    def device_ids_enrolled_by(self, when: float) -> list[str]:
        rows = self._all(
            "SELECT device_id FROM devices WHERE revoked = 0 AND enrolled_at <= %s", (when,)
        )
        return [r[0] for r in rows]

    # -- heads --------------------------------------------------------------------------
    def insert_head(self, head: Head) -> None:
        bias = np.ascontiguousarray(head.global_bias, dtype="<f4")
        self.conn.execute(
            "INSERT INTO heads(version, round_id, created_at, global_bias, metadata) "
            "VALUES (%s, %s, %s, %s, %s)",
            (head.version, head.round_id, head.created_at, bias.tobytes(), dumps(head.metadata)),
        )

    @staticmethod
    def _head(row: tuple | None) -> Head | None:
        if row is None:
            return None
        bias = np.frombuffer(bytes(row[3]), dtype="<f4").astype(np.float32)
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
                "WHERE version = %s",
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
        row = self._one(
            "INSERT INTO rounds(base_version, state, params, seed, opened_at, deadline, "
            "phase_deadline, info) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING round_id",
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
        return int(row[0])

    def get_round(self, round_id: int) -> Round | None:
        return self._round(
            self._one(f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE round_id = %s", (round_id,))
        )

    def round_state(self, round_id: int) -> str | None:
        row = self._one("SELECT state FROM rounds WHERE round_id = %s", (round_id,))
        return None if row is None else row[0]

    def active_round(self) -> Round | None:
        marks = ", ".join(["%s"] * len(FINAL_STATES))
        return self._round(
            self._one(
                f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE state NOT IN ({marks}) "
                "ORDER BY round_id DESC LIMIT 1",
                tuple(FINAL_STATES),
            )
        )

    def latest_round(self) -> Round | None:
        return self._round(
            self._one(f"SELECT {_ROUND_COLUMNS} FROM rounds ORDER BY round_id DESC LIMIT 1")
        )

    def list_rounds(self, limit: int = 50, state: str | None = None) -> list[Round]:
        where, args = ("WHERE state = %s", (state,)) if state is not None else ("", ())
        rows = self._all(
            f"SELECT {_ROUND_COLUMNS} FROM rounds {where} ORDER BY round_id DESC LIMIT %s",
            (*args, limit),
        )
        return [r for r in map(self._round, rows) if r is not None]

    def count_rounds(self, state: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM rounds WHERE state = %s", (state,))[0])

    def update_round(self, round_id: int, expect_state: str, **changes: Any) -> bool:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update round column(s) {sorted(unknown)}")
        if "info" in changes:
            changes["info"] = dumps(changes["info"])
        sets = ", ".join(f"{k} = %s" for k in changes)
        cur = self.conn.execute(
            f"UPDATE rounds SET {sets} WHERE round_id = %s AND state = %s",
            (*changes.values(), round_id, expect_state),
        )
        return cur.rowcount == 1

    # -- participants and messages ------------------------------------------------------
    def add_participant(
        self, round_id: int, device_id: str, client_id: int, now: float
    ) -> Participant:
        self.conn.execute(
            "INSERT INTO participants(round_id, device_id, client_id, joined_at) "
            "VALUES (%s, %s, %s, %s)",
            (round_id, device_id, client_id, now),
        )
        return Participant(round_id, device_id, client_id, now)

    def participant_by_client(self, round_id: int, client_id: int) -> Participant | None:
        row = self._one(
            "SELECT round_id, device_id, client_id, joined_at FROM participants "
            "WHERE round_id = %s AND client_id = %s",
            (round_id, client_id),
        )
        return None if row is None else Participant(*row)

    def get_participant(self, round_id: int, device_id: str) -> Participant | None:
        row = self._one(
            "SELECT round_id, device_id, client_id, joined_at FROM participants "
            "WHERE round_id = %s AND device_id = %s",
            (round_id, device_id),
        )
        return None if row is None else Participant(*row)

    def participants(self, round_id: int) -> list[Participant]:
        rows = self._all(
            "SELECT round_id, device_id, client_id, joined_at FROM participants "
            "WHERE round_id = %s ORDER BY client_id",
            (round_id,),
        )
        return [Participant(*r) for r in rows]

    def insert_message(self, message: Message) -> None:
        self.conn.execute(
            "INSERT INTO messages(round_id, device_id, phase, digest, payload, blob, response, "
            "received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
            "FROM messages WHERE round_id = %s AND device_id = %s AND phase = %s",
            (round_id, device_id, phase),
        )
        return None if row is None else self._message(row)

    def messages(self, round_id: int, phase: str, with_blob: bool = True) -> list[Message]:
        blob = "blob" if with_blob else "NULL::bytea"
        rows = self._all(
            f"SELECT round_id, device_id, phase, digest, payload, {blob}, response, received_at "
            "FROM messages WHERE round_id = %s AND phase = %s ORDER BY received_at, device_id",
            (round_id, phase),
        )
        return [self._message(r) for r in rows]

    def count_messages(self, round_id: int, phase: str) -> int:
        return int(
            self._one(
                "SELECT COUNT(*) FROM messages WHERE round_id = %s AND phase = %s",
                (round_id, phase),
            )[0]
        )

    def insert_ciphertexts(self, round_id: int, sender: int, items: dict[int, str]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO ciphertexts(round_id, sender, recipient, ciphertext) "
                "VALUES (%s, %s, %s, %s)",
                [(round_id, sender, int(r), ct) for r, ct in items.items()],
            )

    def ciphertexts_for(self, round_id: int, recipient: int) -> dict[int, str]:
        rows = self._all(
            "SELECT sender, ciphertext FROM ciphertexts WHERE round_id = %s AND recipient = %s "
            "ORDER BY sender",
            (round_id, recipient),
        )
        return {int(s): c for s, c in rows}


class PostgresStorage(Storage):
    """PostgreSQL :class:`Storage` (see the module docstring).

    Args:
        url: ``postgresql://...`` (see the module docstring for the options).
        migrate: upgrade a database at an older schema version; without it such a
            database is refused (a new, empty database is always created).
        steps: the schema migrations (tests pass their own).
        connect_timeout: seconds to wait for the first connection.
    """

    def __init__(
        self,
        url: str,
        migrate: bool = False,
        steps: Sequence[Migration] = MIGRATIONS,
        connect_timeout: float = 10.0,
    ) -> None:
        psycopg = _require_psycopg()
        from psycopg_pool import ConnectionPool, PoolTimeout

        self.url = redact(url)
        conninfo, options = split_url(url)
        self.synchronous = options.get("synchronous", "full")
        if self.synchronous not in ("full", "normal"):
            raise StorageError(f"{self.url}: synchronous must be 'full' or 'normal'")
        try:
            pool_max = int(options.get("pool_max", "8"))
        except ValueError:
            pool_max = 0
        if pool_max < 1:
            raise StorageError(f"{self.url}: pool_max must be a positive integer")
        self._psycopg = psycopg
        self._wlock = threading.RLock()
        self._closed = False
        self._serve_conn: Any = None
        self.schema_found: int | None = None
        self.schema_version = 0
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_max,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            open=False,
            name="edgerec-coordinator",
        )
        try:
            self.pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self.pool.close()
            raise StorageError(
                f"{self.url}: cannot connect to PostgreSQL within {connect_timeout:g} s "
                "(is the server running, and the user, password and database right?)"
            ) from None
        try:
            self._init_schema(migrate, tuple(steps))
        except psycopg.Error as exc:
            self.pool.close()
            raise StorageError(f"{self.url}: cannot use the database ({exc})") from None
        except BaseException:
            self.pool.close()
            raise

    def _configure(self, conn: Any) -> None:
        if self.synchronous == "normal":
            conn.execute("SET synchronous_commit = off")

    # -- schema -------------------------------------------------------------------------
    def _init_schema(self, migrate: bool, steps: tuple[Migration, ...]) -> None:
        with self.pool.connection() as conn:
            # a session lock: two processes starting on a new database create it once
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (_APP, _MIGRATE_LOCK))
            try:
                self._migrate_locked(conn, migrate, steps)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_APP, _MIGRATE_LOCK))

    def _migrate_locked(self, conn: Any, migrate: bool, steps: tuple[Migration, ...]) -> None:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        }
        new = not tables
        if not new and "schema_version" not in tables:
            raise StorageError(
                f"{self.url}: the database (schema {self._schema_name(conn)!r}) holds tables "
                "but is not an edgerec coordinator database (no schema_version table); "
                "point --db at a new or coordinator database"
            )
        found = 0
        if not new:
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            found = int(row[0])
        todo = pending(self.url, found, steps)
        if todo and not new and not migrate:
            require_current(self.url, found, steps)
        self.schema_found = None if new else found
        if todo:
            conn.execute("BEGIN")
            try:
                conn.execute(VERSION_TABLE["postgres"])
                for step in todo:
                    for stmt in step.statements("postgres"):
                        conn.execute(stmt)
                    conn.execute(
                        "INSERT INTO schema_version VALUES (%s, %s, %s)",
                        (step.version, step.description, time.time()),
                    )
                    log.info("%s: schema version %d (%s)", self.url, step.version, step.description)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.schema_version = todo[-1].version if todo else found
        if new:
            log.info("created coordinator database %s", self.url)

    @staticmethod
    def _schema_name(conn: Any) -> str:
        return str(conn.execute("SELECT current_schema()").fetchone()[0])

    # -- transactions -------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[PostgresTransaction]:
        self._check_open()
        with self._wlock, self.pool.connection() as conn:
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_APP, _WRITE_LOCK))
                yield PostgresTransaction(conn)
            except BaseException:
                self._rollback(conn)
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[PostgresTransaction]:
        self._check_open()
        with self.pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield PostgresTransaction(conn)
            except BaseException:
                self._rollback(conn)
                raise
            conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        if conn.closed:
            return
        try:
            conn.execute("ROLLBACK")
        except self._psycopg.Error:  # a broken connection: the pool discards it
            log.warning("%s: rollback failed; dropping the connection", self.url)

    @contextmanager
    def serve_lock(self) -> Iterator[None]:
        """Held by ``serve`` for its life: a second server on this database is refused."""
        self._check_open()
        conn = self._psycopg.connect(self.pool.conninfo, autocommit=True)
        try:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (_APP, _SERVE_LOCK)
            ).fetchone()[0]
            if not got:
                raise StorageError(
                    f"{self.url}: another coordinator is serving this database; "
                    "one process per database (several processes are not supported yet)"
                )
            yield
        finally:
            conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.url}: storage is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool.close()
