"""PostgreSQL implementation of the coordinator storage (``psycopg`` 3 + a pool).

Same semantics as :mod:`.sqlite`, query for query (both run the queries of
:mod:`.sql_transaction`):

* Statements whose result is not read at once go out in pipeline mode (see
  :class:`PostgresTransaction`): a group commit waits on the database twice.
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

Several ``serve`` processes may share one database once :meth:`PostgresStorage.share`
was called (``serve --workers N`` or ``serve --shared-db``): the round engine then
checks its cached SecAgg state against the database (:mod:`.live_rounds`) and closes
phases inside :meth:`PostgresStorage.exclusive`. :meth:`PostgresStorage.serve_lock`
keeps the deployments apart: a single-process server holds the serve lock
exclusively (refusing any other server), a shared one holds it shared (refusing only
a single-process server).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .migrations import MIGRATIONS, VERSION_TABLE, Migration, pending, require_current
from .sql_transaction import SqlTransaction
from .storage import Message, Storage, StorageError

log = logging.getLogger(__name__)

#: advisory-lock keys (two int4: the application "ERCD", then the purpose)
_APP = 0x45524344
_WRITE_LOCK = 1
_MIGRATE_LOCK = 2
_SERVE_LOCK = 3

_OWN_OPTIONS = ("synchronous", "pool_max")
#: a pooled connection idle longer than this is checked (one round trip) before use
_CHECK_AFTER_IDLE_S = 5.0


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


class PostgresTransaction(SqlTransaction):
    """:class:`~.sql_transaction.SqlTransaction` over one ``psycopg`` connection.

    Statements whose result nothing reads at once — ``BEGIN`` and the writer lock,
    the messages of a group commit, ``COMMIT`` — are sent in psycopg's pipeline mode
    (:meth:`send`) and the transaction goes on without waiting: the database works on
    them while this process checks the next message. Any statement whose result is
    read first settles the pipeline (:meth:`settle`: waits for everything sent, raising
    the first error), so a group commit costs two waits on the database: its reads
    (sent with ``BEGIN`` and the lock) and its ``COMMIT`` (sent behind its inserts).
    """

    dialect = "postgres"
    param_marker = "%s"
    null_blob = "NULL::bytea"
    log = log

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self._stream: Any = None  # the open pipeline of send_message(), if any

    def _insert_returning_id(self, sql: str, params: tuple, id_column: str) -> int:
        return int(self._one(f"{sql} RETURNING {id_column}", params)[0])

    def send(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Send ``sql`` in pipeline mode without waiting for its reply (a cursor whose
        rows can be read after :meth:`settle`)."""
        if self._stream is None:
            self._stream = self.conn.pipeline()
            self._stream.__enter__()
        return self.conn.execute(self._sql(sql), params)

    def send_message(self, message: Message) -> None:
        """The ``INSERT`` goes out in pipeline mode and the server runs it while this
        process checks the next message; nothing waits for its reply until the next
        statement whose result is read, or the commit."""
        self.send(self._INSERT_MESSAGE, self._message_row(message))

    def settle(self, exc: BaseException | None = None) -> None:
        """Leave the pipeline of :meth:`send`: wait for every statement sent, raising the
        first error (with ``exc``, the transaction already failed: just leave it)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    def commit(self) -> None:
        """``COMMIT``; after statements sent without waiting, in their pipeline (one round
        trip for all)."""
        self.send("COMMIT")
        self.settle()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.settle()  # a statement whose result (rows, rowcount) is read next
        return super()._execute(sql, params)

    def _cursor(self) -> Any:
        self.settle()
        return super()._cursor()

    def apply_migrations(self, steps: Sequence[Migration], url: str) -> None:
        self.settle()
        super().apply_migrations(steps, url)

    def _all_at_once(self, queries: list[tuple[str, tuple]]) -> list[list[tuple]]:
        """psycopg's pipeline mode: every query sent, then every result read (one round
        trip, so a group commit's reads cost one wait on the network, not one each)."""
        cursors = [self.send(sql, params) for sql, params in queries]
        self.settle()
        return [cur.fetchall() for cur in cursors]


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
        self._local = threading.local()  # the exclusive() transaction of this thread
        self._closed = False
        self._serve_conn: Any = None
        self._returned_at: dict[int, float] = {}  # id(connection) -> back in the pool at
        self.schema_found: int | None = None
        self.schema_version = 0
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_max,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            configure=self._configure,
            check=self._check_if_idle,
            reset=self._note_returned,
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

    def _note_returned(self, conn: Any) -> None:
        self._returned_at[id(conn)] = time.monotonic()

    def _check_if_idle(self, conn: Any) -> None:
        """Check a pooled connection before use only when it sat idle for a while: one
        round trip saved per request, while a connection the server or the network
        dropped during a quiet spell is still found and replaced before it is used."""
        from psycopg_pool import ConnectionPool

        if time.monotonic() - self._returned_at.get(id(conn), 0.0) > _CHECK_AFTER_IDLE_S:
            ConnectionPool.check_connection(conn)

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
                PostgresTransaction(conn).apply_migrations(todo, self.url)
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
        joined = getattr(self._local, "tx", None)
        if joined is not None:  # inside exclusive(): part of its transaction
            yield joined
            return
        with self._wlock, self.pool.connection() as conn:
            tx = PostgresTransaction(conn)
            try:  # BEGIN and the lock go out with the transaction's first statements
                tx.send("BEGIN")
                tx.send("SELECT pg_advisory_xact_lock(?, ?)", (_APP, _WRITE_LOCK))
                yield tx
                tx.commit()
            except BaseException as exc:
                tx.settle(exc)
                self._rollback(conn)
                raise

    def share(self) -> None:
        """Several coordinator processes serve this database (see the module docstring)."""
        self.shared = True

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer lock for a whole section; :meth:`write` blocks in it (on this
        thread) join its transaction, committed when the section ends. A no-op unless
        the database is shared."""
        if not self.shared or getattr(self._local, "tx", None) is not None:
            yield
            return
        with self.write() as tx:
            self._local.tx = tx
            try:
                yield
            finally:
                self._local.tx = None

    @contextmanager
    def read_single(self) -> Iterator[PostgresTransaction]:
        """For one statement: no ``BEGIN``/``COMMIT`` round trips (autocommit; a single
        statement sees one snapshot by itself)."""
        self._check_open()
        with self.pool.connection() as conn:
            yield PostgresTransaction(conn)

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
        """Held by ``serve`` for its life: exclusively by a single-process server (a
        second server on this database is refused), shared once :meth:`share` was
        called (shared servers coexist; a single-process one is refused)."""
        self._check_open()
        conn = self._psycopg.connect(self.pool.conninfo, autocommit=True)
        kind = "_shared" if self.shared else ""
        got = False
        try:
            got = conn.execute(
                f"SELECT pg_try_advisory_lock{kind}(%s, %s)", (_APP, _SERVE_LOCK)
            ).fetchone()[0]
            if not got:
                raise StorageError(
                    f"{self.url}: another coordinator is serving this database"
                    + (
                        " as its only process (stop it, or run every server with "
                        "--workers N / --shared-db)"
                        if self.shared
                        else "; a single-process server needs it alone (run every "
                        "server with --workers N / --shared-db to share it)"
                    )
                )
            yield
        finally:
            # unlock before closing: the server drops a closed session's locks only once
            # its backend has exited, which a server started right after could race
            if got and not conn.closed:
                try:
                    conn.execute(f"SELECT pg_advisory_unlock{kind}(%s, %s)", (_APP, _SERVE_LOCK))
                except self._psycopg.Error:  # a broken connection: closing releases it
                    log.warning("%s: could not release the serve lock; closing", self.url)
            conn.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool.close()
