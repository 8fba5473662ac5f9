"""Durable on-device interaction history, stored in SQLite (standard library only).

:class:`HistoryStore` keeps, per user, the most recent ``max_events_per_user``
interaction events (user id, raw item id, timestamp, event type) in one SQLite
file in WAL mode. It is what :mod:`edgerec.runtime.features` reads to build the
model input.

Durability guarantee
--------------------
An event is *acknowledged* when :meth:`HistoryStore.record` (or
:meth:`~HistoryStore.record_many`) returns; until then it may or may not be
stored. What survives depends on ``synchronous`` (the SQLite ``synchronous``
pragma; the journal is always WAL):

``"normal"`` (default)
    Every acknowledged event survives a crash or ``kill -9`` of the process:
    the commit has written the WAL frames into the operating system's page
    cache before ``record()`` returns, and SQLite recovers them from the
    ``-wal`` file on the next open (``tests/runtime/test_history_kill.py``
    kills a writer with SIGKILL and checks exactly this). It does **not** fsync
    on every commit, so an operating-system crash or power loss can roll back
    the transactions committed since the last checkpoint — at most ~1000 WAL
    pages (about 1 MiB with the store's 1 KiB pages: a few hundred single-event
    commits), because SQLite checkpoints, fsyncing the WAL first, whenever the
    WAL grows past that. SQLite documents WAL + NORMAL as always consistent:
    the database is never corrupted and never holds part of a transaction; it
    only loses that tail. Call :meth:`HistoryStore.sync` (a checkpoint: fsync
    of the WAL, then of the database) to make everything acknowledged so far
    survive power loss too, e.g. when the app goes to the background. Losing
    the last seconds of views on a power cut is acceptable for a
    recommendation history; a 3-4x slower write path is not. Measured on the dev
    VM disk: 17-20k sequential ``record()``/s (``benchmarks/bench_history_store.py``).
``"full"``
    Each commit fsyncs the WAL before ``record()`` returns, so acknowledged
    events also survive power loss (as far as the storage honours fsync).
    One fsync per transaction limits a single sequential writer to the
    disk's fsync rate (benchmarks/RESULTS.md, history store). Concurrent
    callers are group-committed — whoever finds no commit in progress writes
    everything queued so far in one transaction and one fsync, and every
    caller in the group returns only after that commit — and
    ``record_many()`` commits a whole batch at once (40-120k events/s in
    batches of 100).

Both modes group-commit concurrent callers; none ever returns before its
event is committed.

Threads and processes
---------------------
One store object may be shared by any number of threads: writes go through a
single writer connection (group commit), reads through a separate reader
connection, so a read does not wait for a write's fsync. Several processes may
open the same file (SQLite locking, ``busy_timeout``); do not carry an open
store across ``fork()``.

Ordering and the per-user cap
-----------------------------
:meth:`HistoryStore.history` returns events in time order; equal timestamps
keep insertion order. When a user has more than ``max_events_per_user`` events
the oldest in that same order (smallest timestamp, then earliest inserted) are
deleted in the transaction that added the new ones. Reopening with a smaller
cap trims every user at open.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple

from edgerec.errors import InputError

from .errors import HistoryStoreError

__all__ = ["SCHEMA_VERSION", "Event", "HistoryStore"]

logger = logging.getLogger(__name__)

#: Version of the table layout, stored in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of an edgerec history store ("ERHS").
APPLICATION_ID = 0x45524853
_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = ("events", "users")

_SCHEMA = (
    "CREATE TABLE users ("
    " uid INTEGER PRIMARY KEY,"
    " user TEXT NOT NULL UNIQUE,"
    " n INTEGER NOT NULL,"  # events stored now
    " seq INTEGER NOT NULL)",  # events ever inserted: the insertion-order tie-break
    # Clustered on (uid, ts, seq): a commit touches one leaf page of the user's
    # newest events (and one users page); history() is one contiguous range scan.
    "CREATE TABLE events ("
    " uid INTEGER NOT NULL,"
    " ts REAL NOT NULL,"
    " seq INTEGER NOT NULL,"
    " item TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " PRIMARY KEY (uid, ts, seq)) WITHOUT ROWID",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
    f"PRAGMA application_id = {APPLICATION_ID}",
)
# Small pages: each commit appends fewer WAL bytes (less flash wear, ~1.5x faster).
_PAGE_SIZE = 1024
_UPSERT_USER = (
    "INSERT INTO users(user, n, seq) VALUES (?1, ?2, ?2) ON CONFLICT(user) "
    "DO UPDATE SET n = n + excluded.n, seq = seq + excluded.n RETURNING uid, n, seq"
)
_INSERT_EVENT = "INSERT INTO events(uid, ts, seq, item, type) VALUES (?, ?, ?, ?, ?)"
_TRIM = (
    "DELETE FROM events WHERE uid = ?1 AND (ts, seq) <= "
    "(SELECT ts, seq FROM events WHERE uid = ?1 ORDER BY ts, seq LIMIT 1 OFFSET ?2 - 1)"
)
_SET_COUNT = "UPDATE users SET n = ? WHERE uid = ?"
_HISTORY = (
    "SELECT e.item, e.ts, e.type FROM users u JOIN events e ON e.uid = u.uid "
    "WHERE u.user = ? ORDER BY e.ts, e.seq"
)
_HISTORY_LAST = (
    "SELECT e.item, e.ts, e.type FROM users u JOIN events e ON e.uid = u.uid "
    "WHERE u.user = ? ORDER BY e.ts DESC, e.seq DESC LIMIT ?"
)


class Event(NamedTuple):
    """One interaction: ``user`` did ``event_type`` on ``item`` at ``timestamp``.

    ``timestamp`` is seconds since the Unix epoch (float).
    """

    user: str
    item: str
    timestamp: float
    event_type: str = "view"


class _Pending:
    """Rows of one ``record``/``record_many`` call waiting for a group commit."""

    __slots__ = ("rows", "done", "error")

    def __init__(self, rows: list[tuple[str, str, float, str]]) -> None:
        self.rows = rows
        self.done = False
        self.error: BaseException | None = None


def _check_id(value: object, what: str) -> str:
    if type(value) is not str and not isinstance(value, str):
        raise InputError(f"{what} must be a non-empty string (got {type(value).__name__})")
    if not value:
        raise InputError(f"{what} must be a non-empty string (got '')")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(f"{what} {value!r} is not valid UTF-8 text ({exc.reason})") from None
    return value


def _check_timestamp(value: object, now: float | None = None) -> float:
    if value is None:
        return time.time() if now is None else now
    if type(value) is float or type(value) is int:
        ts = float(value)
    elif isinstance(value, datetime):
        ts = value.timestamp()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        ts = float(value)
    else:
        raise InputError(
            "timestamp must be seconds since the Unix epoch (int/float) or a datetime "
            f"(got {type(value).__name__})"
        )
    if not math.isfinite(ts) or ts < 0:
        raise InputError(f"timestamp must be finite and >= 0 (got {ts!r})")
    return ts


def _row(user: object, item: object, timestamp: object, event_type: object, now: float | None):
    return (
        _check_id(user, "user id"),
        _check_id(item, "item id"),
        _check_timestamp(timestamp, now),
        _check_id(event_type, "event_type"),
    )


class HistoryStore:
    """Durable per-user interaction history in one SQLite file (WAL mode).

    Args:
        path: the database file; created (with missing parent folders) if absent.
            An existing file must be an edgerec history store: anything else (not
            SQLite, another application's database, a newer schema) raises
            :class:`~edgerec.runtime.errors.HistoryStoreError` and is left untouched.
        max_events_per_user: keep at most this many events per user; the oldest
            are deleted when more arrive.
        synchronous: ``"normal"`` (survives process crash) or ``"full"`` (also
            survives power loss); see the module docstring.
        busy_timeout: seconds to wait for another process's write lock.

    Example::

        with HistoryStore("history.db") as store:
            store.record("alice", "sku-42")
            events = store.history("alice", limit=50)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_events_per_user: int = 1000,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = 5.0,
    ) -> None:
        if isinstance(max_events_per_user, bool) or not isinstance(
            max_events_per_user, numbers.Integral
        ):
            raise InputError(
                f"max_events_per_user must be an integer (got {type(max_events_per_user).__name__})"
            )
        if max_events_per_user < 1:
            raise InputError(f"max_events_per_user must be at least 1 (got {max_events_per_user})")
        if synchronous not in ("normal", "full"):
            raise InputError(f"synchronous must be 'normal' or 'full' (got {synchronous!r})")
        if not isinstance(busy_timeout, numbers.Real) or not busy_timeout >= 0:
            raise InputError(f"busy_timeout must be seconds >= 0 (got {busy_timeout!r})")
        self._path = Path(path)
        self._cap = int(max_events_per_user)
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout * 1000)

        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Pending] = []
        self._leader = False
        self._closed = False
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()

        _check_header(self._path)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryStoreError(f"{self._path}: cannot create its folder ({exc})") from None
        uri = self._path.absolute().as_uri()
        self._wconn = self._connect(uri + "?mode=rwc")
        try:
            self._init_writer()
            self._rconn = self._connect(uri + "?mode=rw")
            self._rconn.execute("PRAGMA query_only = ON")
        except BaseException:
            self._wconn.close()
            raise
        self._wcur = self._wconn.cursor()
        logger.debug(
            "opened history store %s (cap %d, synchronous=%s)", self._path, self._cap, synchronous
        )

    # -- opening -------------------------------------------------------------------------

    def _connect(self, uri: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_ms / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        except sqlite3.Error as exc:
            raise HistoryStoreError(f"{self._path}: cannot open the store ({exc})") from None
        return conn

    def _inspect(self, conn: sqlite3.Connection) -> bool:
        """True for a new (empty) database, False for a valid store; raise otherwise."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = sorted(
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")
        )
        if app_id == 0 and version == 0 and not tables:
            return True
        if app_id != APPLICATION_ID:
            raise HistoryStoreError(
                f"{self._path}: a SQLite database that is not an edgerec history store "
                f"(application_id={app_id}, user_version={version}, tables: "
                f"{', '.join(tables) or 'none'}); refusing to modify it — pass another path"
            )
        if version > SCHEMA_VERSION:
            raise HistoryStoreError(
                f"{self._path}: history store schema version {version} is newer than this "
                f"edgerec supports ({SCHEMA_VERSION}); upgrade edgerec"
            )
        if version != SCHEMA_VERSION or not set(_TABLES) <= set(tables):
            raise HistoryStoreError(
                f"{self._path}: damaged edgerec history store (schema version {version}, "
                f"tables: {', '.join(tables) or 'none'}); delete it to start over"
            )
        return False

    def _init_writer(self) -> None:
        conn = self._wconn
        try:
            is_new = self._inspect(conn)  # reads only: nothing is written before this passes
            if is_new:  # must precede the first write (and WAL mode)
                conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise HistoryStoreError(
                    f"{self._path}: the file system does not support SQLite WAL mode "
                    f"(journal_mode stayed {mode!r}); use a local writable folder"
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            conn.execute("PRAGMA secure_delete = ON")  # forget()/trim overwrite deleted rows
            conn.execute("PRAGMA journal_size_limit = 4194304")
            if is_new:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._inspect(conn):  # another process may have won the race
                        for stmt in _SCHEMA:
                            conn.execute(stmt)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
                logger.info("created history store %s (schema v%d)", self._path, SCHEMA_VERSION)
            self._trim_all()
        except sqlite3.Error as exc:
            raise HistoryStoreError(
                f"{self._path}: cannot use the history store ({exc}); if the file is not "
                "an edgerec history store, pass another path"
            ) from None

    def _trim_all(self) -> None:
        conn = self._wconn
        over = conn.execute("SELECT uid, n FROM users WHERE n > ?", (self._cap,)).fetchall()
        if not over:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for uid, n in over:
                conn.execute(_TRIM, (uid, n - self._cap))
                conn.execute(_SET_COUNT, (self._cap, uid))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        logger.info("trimmed %d users to the cap of %d events", len(over), self._cap)

    # -- properties ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def max_events_per_user(self) -> int:
        """Per-user cap on stored events."""
        return self._cap

    @property
    def synchronous(self) -> str:
        """``"normal"`` or ``"full"`` (see the module docstring)."""
        return self._synchronous

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    # -- writing -------------------------------------------------------------------------

    def record(
        self,
        user: str,
        item: str,
        timestamp: float | datetime | None = None,
        event_type: str = "view",
    ) -> None:
        """Store one event; returns only after it is committed (see "Durability").

        Args:
            user: non-empty user id.
            item: non-empty raw item id (need not be in the vocabulary).
            timestamp: seconds since the Unix epoch (finite, >= 0) or a datetime;
                ``None`` means now.
            event_type: non-empty label such as ``"view"`` or ``"purchase"``.

        Raises:
            InputError: a bad argument (nothing is stored).
            HistoryStoreError: the store is closed or the write failed.
        """
        self._submit([_row(user, item, timestamp, event_type, None)])

    def record_many(self, events: Iterable[Event | tuple | Mapping]) -> int:
        """Store many events in one transaction: all of them or (on error) none.

        Each event is an :class:`Event`, a tuple ``(user, item[, timestamp[,
        event_type]])`` or a mapping with keys ``user``, ``item`` and optionally
        ``timestamp``, ``event_type``. Events without a timestamp get the time of
        this call (their order is kept). Every event is validated before
        anything is written. Returns the number of events stored.
        """
        if isinstance(events, str | bytes):
            raise InputError("record_many() takes an iterable of events, not a string")
        now = time.time()
        rows = []
        for pos, event in enumerate(events):
            try:
                if isinstance(event, Mapping):
                    unknown = set(event) - {"user", "item", "timestamp", "event_type"}
                    if unknown:
                        raise InputError(f"unknown keys {sorted(unknown)}")
                    if "user" not in event or "item" not in event:
                        raise InputError("a mapping needs the keys 'user' and 'item'")
                    args = (
                        event["user"],
                        event["item"],
                        event.get("timestamp"),
                        event.get("event_type", "view"),
                    )
                elif isinstance(event, tuple | list) and 2 <= len(event) <= 4:
                    args = (*event, *(None, "view")[len(event) - 2 :])
                else:
                    raise InputError(
                        "expected an Event, a (user, item[, timestamp[, event_type]]) tuple "
                        f"or a mapping (got {type(event).__name__})"
                    )
                rows.append(_row(*args, now))
            except InputError as exc:
                raise InputError(f"record_many: event {pos}: {exc}") from None
        if rows:
            self._submit(rows)
        return len(rows)

    def _submit(self, rows: list[tuple[str, str, float, str]]) -> None:
        """Queue ``rows``; lead a group commit or wait for the leader's commit."""
        me = _Pending(rows)
        with self._cv:
            if self._closed:
                raise HistoryStoreError(f"{self._path}: the history store is closed")
            self._queue.append(me)
            while self._leader and not me.done:
                self._cv.wait()
            if me.done:
                batch = None
            else:
                self._leader = True
                batch, self._queue = self._queue, []
        if batch is not None:
            try:
                self._commit_group(batch)
            finally:
                with self._cv:
                    self._leader = False
                    self._cv.notify_all()
        if me.error is not None:
            raise me.error

    def _commit_group(self, batch: list[_Pending]) -> None:
        try:
            with self._wlock:
                try:
                    self._write([row for p in batch for row in p.rows])
                except sqlite3.Error as exc:
                    if len(batch) == 1:
                        batch[0].error = self._write_error(exc)
                    else:  # do not let one caller's failure fail the others
                        for p in batch:
                            try:
                                self._write(p.rows)
                            except sqlite3.Error as exc2:
                                p.error = self._write_error(exc2)
                for p in batch:
                    p.done = True
        finally:
            for p in batch:  # interrupted (e.g. KeyboardInterrupt): never leave a waiter hanging
                if not p.done:
                    p.error = HistoryStoreError(f"{self._path}: write interrupted; not stored")
                    p.done = True

    def _write_error(self, exc: sqlite3.Error) -> HistoryStoreError:
        err = HistoryStoreError(f"{self._path}: write failed, events not stored ({exc})")
        err.__cause__ = exc
        return err

    def _write(self, rows: list[tuple[str, str, float, str]]) -> None:
        """Insert ``rows`` and trim over-cap users in one transaction."""
        cur = self._wcur
        cap = self._cap
        cur.execute("BEGIN IMMEDIATE")
        try:
            if len(rows) == 1:
                user, item, ts, typ = rows[0]
                ((uid, n, seq),) = cur.execute(_UPSERT_USER, (user, 1)).fetchall()
                cur.execute(_INSERT_EVENT, (uid, ts, seq, item, typ))
                if n > cap:
                    cur.execute(_TRIM, (uid, n - cap))
                    cur.execute(_SET_COUNT, (cap, uid))
            else:
                by_user: dict[str, list[tuple[str, float, str]]] = {}
                for user, item, ts, typ in rows:
                    by_user.setdefault(user, []).append((item, ts, typ))
                for user, events in by_user.items():
                    k = len(events)
                    ((uid, n, seq),) = cur.execute(_UPSERT_USER, (user, k)).fetchall()
                    first = seq - k + 1
                    params = [(uid, t, first + j, i, e) for j, (i, t, e) in enumerate(events)]
                    cur.executemany(_INSERT_EVENT, params)
                    if n > cap:
                        cur.execute(_TRIM, (uid, n - cap))
                        cur.execute(_SET_COUNT, (cap, uid))
            cur.execute("COMMIT")
        except BaseException:
            _rollback(self._wconn)
            raise

    def forget(self, user: str) -> int:
        """Delete every event of ``user`` (right to be forgotten); returns how many.

        The rows are deleted with ``secure_delete`` (their bytes are overwritten
        in the database file) and the WAL is then checkpointed and truncated so
        the events do not linger in the ``-wal`` file either. Copies outside
        this file (backups, the flash translation layer) are out of its reach.
        Events of ``user`` recorded concurrently with this call may land before
        or after it.
        """
        user = _check_id(user, "user id")
        with self._wlock:
            self._check_open()
            conn = self._wconn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute("SELECT uid FROM users WHERE user = ?", (user,)).fetchone()
                    deleted = 0
                    if row is not None:
                        deleted = conn.execute("DELETE FROM events WHERE uid = ?", row).rowcount
                        conn.execute("DELETE FROM users WHERE uid = ?", row)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise HistoryStoreError(f"{self._path}: forget failed ({exc})") from exc
        if busy:
            logger.warning(
                "forget(): WAL checkpoint of %s was blocked by a reader; the deleted events "
                "leave the -wal file at the next checkpoint",
                self._path,
            )
        logger.info("forgot %d events of one user", deleted)
        return deleted

    def sync(self) -> None:
        """Make every acknowledged event survive power loss now (WAL checkpoint + fsync).

        Only needed with ``synchronous="normal"``; cheap when nothing changed.
        A checkpoint fsyncs the WAL before copying it into the database; when
        another process's open read transaction keeps it from copying anything,
        SQLite skips that fsync, so the WAL file is fsynced here directly.
        """
        with self._wlock:
            self._check_open()
            try:
                _, wal_frames, copied = self._wconn.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).fetchone()
                if wal_frames > 0 and copied < wal_frames:
                    fd = os.open(f"{self._path}-wal", os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except (sqlite3.Error, OSError) as exc:
                raise HistoryStoreError(f"{self._path}: sync failed ({exc})") from exc

    # -- reading -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise HistoryStoreError(f"{self._path}: the history store is closed")

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        with self._rlock:
            self._check_open()
            try:
                return self._rconn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise HistoryStoreError(f"{self._path}: read failed ({exc})") from exc

    def history(self, user: str, limit: int | None = None) -> list[Event]:
        """Events of ``user`` in time order (ties: insertion order), oldest first.

        Args:
            user: user id.
            limit: return only the most recent ``limit`` events (``None``: all).
        """
        user = _check_id(user, "user id")
        if limit is None:
            rows = self._read(_HISTORY, (user,))
        else:
            if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0:
                raise InputError(f"limit must be None or an integer >= 0 (got {limit!r})")
            if limit == 0:
                return []
            rows = self._read(_HISTORY_LAST, (user, int(limit)))
            rows.reverse()
        return [Event(user, item, ts, typ) for item, ts, typ in rows]

    def count(self, user: str) -> int:
        """Number of stored events of ``user`` (0 for an unknown user)."""
        user = _check_id(user, "user id")
        rows = self._read("SELECT n FROM users WHERE user = ?", (user,))
        return rows[0][0] if rows else 0

    def users(self) -> list[str]:
        """Every user with at least one stored event, sorted."""
        return [r[0] for r in self._read("SELECT user FROM users ORDER BY user", ())]

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes, then close the file. Idempotent."""
        with self._cv:
            if self._closed:
                return
            self._closed = True  # refuse new writes; queued ones still commit
            while self._leader or self._queue:
                self._cv.wait()
        with self._wlock:
            self._wconn.close()
        with self._rlock:
            self._rconn.close()
        logger.debug("closed history store %s", self._path)

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"HistoryStore({str(self._path)!r}, max_events_per_user={self._cap}, {state})"


def _check_header(path: Path) -> None:
    """Refuse, without writing anything, a path that cannot be a SQLite database."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise HistoryStoreError(f"{path}: is a directory, not a history store file") from None
    except OSError as exc:
        raise HistoryStoreError(f"{path}: cannot read the history store ({exc})") from None
    if head and head != _SQLITE_MAGIC:
        raise HistoryStoreError(
            f"{path}: not a SQLite database (starts with {head!r}); refusing to open it "
            "as a history store — pass another path"
        )


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction without masking the error that caused it."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
