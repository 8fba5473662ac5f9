"""Every query of the coordinator's storage, written once for all SQL backends.

:class:`SqlTransaction` implements :class:`~.storage.Transaction` over a DB-API
style connection whose ``execute`` returns a cursor (``sqlite3`` and
``psycopg`` 3 both do). Queries are written with ``?`` placeholders; a backend
subclass supplies only what really differs between databases:

* :attr:`~SqlTransaction.param_marker`: the driver's placeholder (``?`` is
  rewritten to it);
* :attr:`~SqlTransaction.null_blob`: a NULL that stands for a blob column in a
  select list (PostgreSQL needs its type);
* :attr:`~SqlTransaction.dialect`: which SQL of a :class:`~.migrations.Migration`
  to run;
* :meth:`~SqlTransaction._insert_returning_id`: how a new row reports its id
  (``lastrowid`` or ``RETURNING``).

Transactions themselves (``BEGIN``, locks, ``COMMIT``, connections) belong to the
backend's :class:`~.storage.Storage`; savepoints use the SQL both databases share.
The methods follow the order of :class:`~.storage.Transaction`, one per query.
"""

from __future__ import annotations

import json
import logging
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from .fleet_sql import FleetQueries
from .migrations import Migration
from .storage import (
    FINAL_STATES,
    PENDING,
    BatchSnapshot,
    Candidate,
    Head,
    Message,
    Participant,
    Round,
    Transaction,
    dumps,
)

ROUND_COLUMNS = (
    "round_id, base_version, state, params, seed, opened_at, deadline, phase_deadline, "
    "closed_at, failure, result_version, info"
)
#: the round columns :meth:`SqlTransaction.update_round` may change
UPDATABLE = {
    "state",
    "phase_deadline",
    "closed_at",
    "failure",
    "result_version",
    "info",
    "deadline",
}
_HEAD_COLUMNS = "version, round_id, created_at, global_bias, metadata"
_CANDIDATE_COLUMNS = (
    "round_id, base_version, created_at, global_bias, metadata, state, evaluation_round, "
    "decided_at, evaluation"
)
_PARTICIPANT_COLUMNS = "round_id, device_id, client_id, joined_at"
_COUNT_MESSAGES = "SELECT COUNT(*) FROM messages WHERE round_id = ? AND phase = ?"


class SqlTransaction(FleetQueries, Transaction):
    """:class:`~.storage.Transaction` over one connection; subclasses name the dialect."""

    #: the migrations dialect (see :data:`.migrations.DIALECTS`)
    dialect: ClassVar[str]
    #: the driver's parameter placeholder; the queries here are written with ``?``
    param_marker: ClassVar[str] = "?"
    #: a NULL in the type of a blob column, for a select list that leaves blobs out
    null_blob: ClassVar[str] = "NULL"
    #: where schema changes are logged (the backend module's logger)
    log: ClassVar[logging.Logger]

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._depth = 0
        # participations read by prefetch() or written here, valid for this
        # transaction (None: known not to have joined); a savepoint rollback clears it
        self._participants: dict[tuple[int, str], Participant | None] = {}

    # -- what a backend supplies -------------------------------------------------------
    @abstractmethod
    def _insert_returning_id(self, sql: str, params: tuple, id_column: str) -> int:
        """Run the ``INSERT`` statement ``sql`` and return the id the database gave the row."""

    # -- plumbing -----------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        """``sql`` with its ``?`` placeholders in the driver's style."""
        return sql if self.param_marker == "?" else sql.replace("?", self.param_marker)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self._sql(sql), params)

    def _cursor(self) -> Any:
        """A cursor of this transaction's connection (for ``executemany``)."""
        return self.conn.cursor()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self._execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._execute(sql, params).fetchall()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._depth += 1
        name = f"sp{self._depth}"
        self._execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._participants.clear()
            self._execute(f"ROLLBACK TO SAVEPOINT {name}")
            self._execute(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            self._execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    def apply_migrations(self, steps: Sequence[Migration], url: str) -> None:
        """Run ``steps`` in this transaction, recording each in ``schema_version``.

        The backend opens the transaction and creates the version table first.
        """
        for step in steps:
            for stmt in step.statements(self.dialect):
                self.conn.execute(stmt)
            self._execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                (step.version, step.description, time.time()),
            )
            self.log.info("%s: schema version %d (%s)", url, step.version, step.description)

    # -- row -> dataclass ---------------------------------------------------------------
    @staticmethod
    def _head(row: tuple | None) -> Head | None:
        if row is None:
            return None
        bias = np.frombuffer(bytes(row[3]), dtype="<f4").astype(np.float32)
        return Head(row[0], row[1], row[2], bias, json.loads(row[4]))

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

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- devices ------------------------------------------------------------------------
    # insert_device, get_device and the other fleet queries: FleetQueries (fleet_sql)

    def count_devices(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM devices WHERE revoked = 0")[0])

    def device_ids_enrolled_by(self, when: float) -> list[str]:
        rows = self._all(
            "SELECT device_id FROM devices WHERE revoked = 0 AND enrolled_at <= ?", (when,)
        )
        return [r[0] for r in rows]

    # -- heads --------------------------------------------------------------------------
    def insert_head(self, head: Head) -> None:
        bias = np.ascontiguousarray(head.global_bias, dtype="<f4")
        self._execute(
            f"INSERT INTO heads({_HEAD_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (head.version, head.round_id, head.created_at, bias.tobytes(), dumps(head.metadata)),
        )

    def latest_head(self) -> Head | None:
        return self._head(
            self._one(f"SELECT {_HEAD_COLUMNS} FROM heads ORDER BY version DESC LIMIT 1")
        )

    def get_head(self, version: int) -> Head | None:
        return self._head(
            self._one(f"SELECT {_HEAD_COLUMNS} FROM heads WHERE version = ?", (version,))
        )

    # -- candidates ---------------------------------------------------------------------
    def insert_candidate(self, candidate: Candidate) -> None:
        bias = np.ascontiguousarray(candidate.global_bias, dtype="<f4")
        self._execute(
            f"INSERT INTO candidates({_CANDIDATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                candidate.round_id, candidate.base_version, candidate.created_at,
                bias.tobytes(), dumps(candidate.metadata), candidate.state,
                candidate.evaluation_round, candidate.decided_at,
                None if candidate.evaluation is None else dumps(candidate.evaluation),
            ),
        )  # fmt: skip

    def get_candidate(self, round_id: int) -> Candidate | None:
        return self._candidate(
            self._one(
                f"SELECT {_CANDIDATE_COLUMNS} FROM candidates WHERE round_id = ?", (round_id,)
            )
        )

    def pending_candidate(self) -> Candidate | None:
        return self._candidate(
            self._one(
                f"SELECT {_CANDIDATE_COLUMNS} FROM candidates WHERE state = ? "
                "ORDER BY round_id LIMIT 1",
                (PENDING,),
            )
        )

    def latest_decided_candidate(self) -> Candidate | None:
        return self._candidate(
            self._one(
                f"SELECT {_CANDIDATE_COLUMNS} FROM candidates WHERE state <> ? "
                "ORDER BY round_id DESC LIMIT 1",
                (PENDING,),
            )
        )

    def decide_candidate(
        self,
        round_id: int,
        state: str,
        evaluation_round: int | None,
        now: float,
        evaluation: dict,
    ) -> bool:
        cur = self._execute(
            "UPDATE candidates SET state = ?, evaluation_round = ?, decided_at = ?, "
            "evaluation = ? WHERE round_id = ? AND state = ?",
            (state, evaluation_round, now, dumps(evaluation), round_id, PENDING),
        )
        return cur.rowcount == 1

    @staticmethod
    def _candidate(row: tuple | None) -> Candidate | None:
        if row is None:
            return None
        bias = np.frombuffer(bytes(row[3]), dtype="<f4").astype(np.float32)
        return Candidate(
            row[0], row[1], row[2], bias, json.loads(row[4]), row[5], row[6], row[7],
            None if row[8] is None else json.loads(row[8]),
        )  # fmt: skip

    # -- rounds -------------------------------------------------------------------------
    def insert_round(self, rnd: Round) -> int:
        return self._insert_returning_id(
            "INSERT INTO rounds(base_version, state, params, seed, opened_at, deadline, "
            "phase_deadline, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            "round_id",
        )

    def get_round(self, round_id: int) -> Round | None:
        return self._round(
            self._one(f"SELECT {ROUND_COLUMNS} FROM rounds WHERE round_id = ?", (round_id,))
        )

    def round_state(self, round_id: int) -> str | None:
        row = self._one("SELECT state FROM rounds WHERE round_id = ?", (round_id,))
        return None if row is None else row[0]

    def active_round(self) -> Round | None:
        marks = ", ".join("?" * len(FINAL_STATES))
        return self._round(
            self._one(
                f"SELECT {ROUND_COLUMNS} FROM rounds WHERE state NOT IN ({marks}) "
                "ORDER BY round_id DESC LIMIT 1",
                tuple(FINAL_STATES),
            )
        )

    def latest_round(self) -> Round | None:
        return self._round(
            self._one(f"SELECT {ROUND_COLUMNS} FROM rounds ORDER BY round_id DESC LIMIT 1")
        )

    def list_rounds(self, limit: int = 50, state: str | None = None) -> list[Round]:
        where, args = ("WHERE state = ?", (state,)) if state is not None else ("", ())
        rows = self._all(
            f"SELECT {ROUND_COLUMNS} FROM rounds {where} ORDER BY round_id DESC LIMIT ?",
            (*args, limit),
        )
        return [r for r in map(self._round, rows) if r is not None]

    def count_rounds(self, state: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM rounds WHERE state = ?", (state,))[0])

    def update_round(self, round_id: int, expect_state: str, **changes: Any) -> bool:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update round column(s) {sorted(unknown)}")
        if "info" in changes:
            changes["info"] = dumps(changes["info"])
        sets = ", ".join(f"{k} = ?" for k in changes)
        cur = self._execute(
            f"UPDATE rounds SET {sets} WHERE round_id = ? AND state = ?",
            (*changes.values(), round_id, expect_state),
        )
        return cur.rowcount == 1

    # -- participants and messages ------------------------------------------------------
    def add_participant(
        self, round_id: int, device_id: str, client_id: int, now: float
    ) -> Participant:
        self._execute(
            f"INSERT INTO participants({_PARTICIPANT_COLUMNS}) VALUES (?, ?, ?, ?)",
            (round_id, device_id, client_id, now),
        )
        part = self._participants[(round_id, device_id)] = Participant(
            round_id, device_id, client_id, now
        )
        return part

    def participant_by_client(self, round_id: int, client_id: int) -> Participant | None:
        row = self._one(
            f"SELECT {_PARTICIPANT_COLUMNS} FROM participants WHERE round_id = ? AND client_id = ?",
            (round_id, client_id),
        )
        return None if row is None else Participant(*row)

    def get_participant(self, round_id: int, device_id: str) -> Participant | None:
        key = (round_id, device_id)
        if key in self._participants:
            return self._participants[key]
        row = self._one(
            f"SELECT {_PARTICIPANT_COLUMNS} FROM participants WHERE round_id = ? AND device_id = ?",
            (round_id, device_id),
        )
        return None if row is None else Participant(*row)

    def participants(self, round_id: int) -> list[Participant]:
        rows = self._all(
            f"SELECT {_PARTICIPANT_COLUMNS} FROM participants "
            "WHERE round_id = ? ORDER BY client_id",
            (round_id,),
        )
        return [Participant(*r) for r in rows]

    def prefetch(self, groups: dict[tuple[int, str], list[str]]) -> BatchSnapshot:
        plan: list[tuple[str, Any, str, tuple]] = []
        rounds = list(dict.fromkeys(rid for rid, _ in groups))
        for rid in rounds:
            plan.append(("state", rid, "SELECT state FROM rounds WHERE round_id = ?", (rid,)))
        for (rid, phase), ids in groups.items():
            for chunk in _chunks(ids):
                sql = _messages_in(len(chunk), self.null_blob)
                plan.append(("message", (rid, phase), sql, (rid, phase, *chunk)))
            plan.append(("count", (rid, phase), _COUNT_MESSAGES, (rid, phase)))
        for rid in rounds:
            ids = [d for (r, _), group in groups.items() if r == rid for d in group]
            for chunk in _chunks(ids):
                plan.append(("participant", rid, _participants_in(len(chunk)), (rid, *chunk)))
            for device_id in ids:
                self._participants[(rid, device_id)] = None
        results = self._all_at_once([(sql, params) for _, _, sql, params in plan])
        snapshot = BatchSnapshot({rid: None for rid in rounds}, {key: {} for key in groups}, {})
        for (kind, key, _, _), rows in zip(plan, results, strict=True):
            if kind == "state":
                snapshot.states[key] = rows[0][0] if rows else None
            elif kind == "message":
                snapshot.messages[key].update((r[1], self._message(r)) for r in rows)
            elif kind == "count":
                snapshot.counts[key] = int(rows[0][0])
            else:
                for r in rows:
                    self._participants[(key, r[1])] = Participant(*r)
        return snapshot

    def _all_at_once(self, queries: list[tuple[str, tuple]]) -> list[list[tuple]]:
        """The rows of each query; a client/server backend sends them in one round trip."""
        return [self._all(sql, params) for sql, params in queries]

    _INSERT_MESSAGE = (
        "INSERT INTO messages(round_id, device_id, phase, digest, payload, blob, response, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )

    @staticmethod
    def _message_row(message: Message) -> tuple:
        return (
            message.round_id,
            message.device_id,
            message.phase,
            message.digest,
            dumps(message.payload),
            message.blob,
            dumps(message.response),
            message.received_at,
        )

    def insert_message(self, message: Message) -> None:
        self._execute(self._INSERT_MESSAGE, self._message_row(message))

    def messages_of(
        self, round_id: int, phase: str, device_ids: Sequence[str], with_blob: bool = False
    ) -> dict[str, Message]:
        found: dict[str, Message] = {}
        blob = "blob" if with_blob else self.null_blob
        for chunk in _chunks(device_ids):
            rows = self._all(_messages_in(len(chunk), blob), (round_id, phase, *chunk))
            found.update((r[1], self._message(r)) for r in rows)
        return found

    def get_message(self, round_id: int, device_id: str, phase: str) -> Message | None:
        row = self._one(
            "SELECT round_id, device_id, phase, digest, payload, blob, response, received_at "
            "FROM messages WHERE round_id = ? AND device_id = ? AND phase = ?",
            (round_id, device_id, phase),
        )
        return None if row is None else self._message(row)

    def messages(self, round_id: int, phase: str, with_blob: bool = True) -> list[Message]:
        blob = "blob" if with_blob else self.null_blob
        rows = self._all(
            f"SELECT round_id, device_id, phase, digest, payload, {blob}, response, received_at "
            "FROM messages WHERE round_id = ? AND phase = ? ORDER BY received_at, device_id",
            (round_id, phase),
        )
        return [self._message(r) for r in rows]

    def message_device_ids(self, round_id: int, phase: str) -> list[str]:
        rows = self._all(
            "SELECT device_id FROM messages WHERE round_id = ? AND phase = ?", (round_id, phase)
        )
        return [str(r[0]) for r in rows]

    def count_messages(self, round_id: int, phase: str) -> int:
        return int(self._one(_COUNT_MESSAGES, (round_id, phase))[0])

    def insert_ciphertexts(self, round_id: int, sender: int, items: dict[int, str]) -> None:
        cur = self._cursor()
        try:
            cur.executemany(
                self._sql(
                    "INSERT INTO ciphertexts(round_id, sender, recipient, ciphertext) "
                    "VALUES (?, ?, ?, ?)"
                ),
                [(round_id, sender, int(r), ct) for r, ct in items.items()],
            )
        finally:
            cur.close()

    def ciphertexts_for(self, round_id: int, recipient: int) -> dict[int, str]:
        rows = self._all(
            "SELECT sender, ciphertext FROM ciphertexts WHERE round_id = ? AND recipient = ? "
            "ORDER BY sender",
            (round_id, recipient),
        )
        return {int(s): c for s, c in rows}


#: ids per ``IN (...)`` list: well under SQLite's and PostgreSQL's parameter limits
_CHUNK = 500


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


def _messages_in(count: int, blob: str) -> str:
    """The messages of ``count`` devices of one round and phase (``blob``: the column or a
    typed NULL)."""
    return (
        f"SELECT round_id, device_id, phase, digest, payload, {blob}, response, received_at "
        f"FROM messages WHERE round_id = ? AND phase = ? AND device_id IN ({_marks(count)})"
    )


def _participants_in(count: int) -> str:
    """The participations of ``count`` devices in one round."""
    return (
        f"SELECT {_PARTICIPANT_COLUMNS} FROM participants "
        f"WHERE round_id = ? AND device_id IN ({_marks(count)})"
    )


def _marks(count: int) -> str:
    return ", ".join("?" * count)
