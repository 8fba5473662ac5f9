"""The fleet queries (devices, their tokens, enrollment keys, participation), written
once for both storage backends.

A mixin of :class:`~.sql_transaction.SqlTransaction` (which supplies ``_execute`` and
the driver's parameter marker), so the two backends cannot drift apart on the fleet
tables of schema version 2 (:mod:`.migrations`).
"""

from __future__ import annotations

from typing import Any

from .storage import DONE, Device, EnrollKey

_DEVICE_COLUMNS = (
    "device_id, token_hash, enrolled_at, revoked, token_issued_at, next_token_hash, "
    "next_token_issued_at, revoked_at, enroll_key_id"
)
_KEY_COLUMNS = "key_id, key_hash, label, created_at, quota, used, revoked, revoked_at"


def _device(row: Any) -> Device | None:
    if row is None:
        return None
    return Device(
        device_id=row[0],
        token_hash=bytes(row[1]),
        enrolled_at=row[2],
        revoked=bool(row[3]),
        token_issued_at=row[4],
        next_token_hash=None if row[5] is None else bytes(row[5]),
        next_token_issued_at=row[6],
        revoked_at=row[7],
        enroll_key_id=row[8],
    )


def _key(row: Any) -> EnrollKey | None:
    if row is None:
        return None
    return EnrollKey(
        key_id=row[0],
        key_hash=bytes(row[1]),
        label=row[2],
        created_at=row[3],
        quota=None if row[4] is None else int(row[4]),
        used=int(row[5]),
        revoked=bool(row[6]),
        revoked_at=row[7],
    )


class FleetQueries:
    """Mixed into :class:`~.sql_transaction.SqlTransaction` (queries use ``?`` markers)."""

    def _run(self, sql: str, params: tuple = ()) -> Any:
        return self._execute(sql, params)

    # -- devices ------------------------------------------------------------------------
    def insert_device(self, device: Device) -> None:
        self._run(
            f"INSERT INTO devices({_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                device.device_id,
                device.token_hash,
                device.enrolled_at,
                int(device.revoked),
                device.token_issued_at,
                device.next_token_hash,
                device.next_token_issued_at,
                device.revoked_at,
                device.enroll_key_id,
            ),
        )

    def get_device(self, device_id: str) -> Device | None:
        row = self._run(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?", (device_id,)
        ).fetchone()
        return _device(row)

    def list_devices(self, limit: int = 1000) -> list[Device]:
        rows = self._run(
            f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY enrolled_at, device_id LIMIT ?",
            (limit,),
        ).fetchall()
        return [d for d in map(_device, rows) if d is not None]

    def revoke_device(self, device_id: str, now: float) -> bool:
        cur = self._run(
            "UPDATE devices SET revoked = 1, revoked_at = ? WHERE device_id = ? AND revoked = 0",
            (now, device_id),
        )
        return cur.rowcount == 1

    def set_next_token(self, device_id: str, token_hash: bytes, now: float) -> None:
        self._run(
            "UPDATE devices SET next_token_hash = ?, next_token_issued_at = ? WHERE device_id = ?",
            (token_hash, now, device_id),
        )

    def promote_next_token(self, device_id: str, token_hash: bytes) -> bool:
        cur = self._run(
            "UPDATE devices SET token_hash = next_token_hash, "
            "token_issued_at = next_token_issued_at, next_token_hash = NULL, "
            "next_token_issued_at = NULL WHERE device_id = ? AND next_token_hash = ?",
            (device_id, token_hash),
        )
        return cur.rowcount == 1

    def participation(self, device_id: str | None = None) -> list[tuple[str, int]]:
        """``(device_id, round_id)`` of every released round whose sum holds the
        device's upload (it uploaded, and the round ended ``done``: it published a head,
        stored a candidate, or decided one in a federated evaluation)."""
        where, args = ("AND m.device_id = ?", (device_id,)) if device_id else ("", ())
        rows = self._run(
            "SELECT m.device_id, m.round_id FROM messages m JOIN rounds r "
            "ON r.round_id = m.round_id WHERE m.phase = 'upload' AND r.state = ? "
            f"{where} ORDER BY m.device_id, m.round_id",
            (DONE, *args),
        ).fetchall()
        return [(str(d), int(r)) for d, r in rows]

    # -- enrollment keys ----------------------------------------------------------------
    def insert_enroll_key(self, key: EnrollKey) -> None:
        self._run(
            f"INSERT INTO enroll_keys({_KEY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            (
                key.key_id,
                key.key_hash,
                key.label,
                key.created_at,
                key.quota,
                key.used,
                int(key.revoked),
                key.revoked_at,
            ),
        )

    def get_enroll_key(self, key_id: str) -> EnrollKey | None:
        row = self._run(
            f"SELECT {_KEY_COLUMNS} FROM enroll_keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return _key(row)

    def enroll_key_by_hash(self, key_hash: bytes) -> EnrollKey | None:
        row = self._run(
            f"SELECT {_KEY_COLUMNS} FROM enroll_keys WHERE key_hash = ?", (key_hash,)
        ).fetchone()
        return _key(row)

    def list_enroll_keys(self) -> list[EnrollKey]:
        rows = self._run(f"SELECT {_KEY_COLUMNS} FROM enroll_keys ORDER BY created_at, key_id")
        return [k for k in map(_key, rows.fetchall()) if k is not None]

    def count_usable_enroll_keys(self) -> int:
        row = self._run(
            "SELECT COUNT(*) FROM enroll_keys WHERE revoked = 0 AND (quota IS NULL OR used < quota)"
        ).fetchone()
        return int(row[0])

    def use_enroll_key(self, key_id: str) -> bool:
        """Count one enrollment against the key; False when revoked or its quota is used."""
        cur = self._run(
            "UPDATE enroll_keys SET used = used + 1 WHERE key_id = ? AND revoked = 0 "
            "AND (quota IS NULL OR used < quota)",
            (key_id,),
        )
        return cur.rowcount == 1

    def revoke_enroll_key(self, key_id: str, now: float) -> bool:
        cur = self._run(
            "UPDATE enroll_keys SET revoked = 1, revoked_at = ? WHERE key_id = ? AND revoked = 0",
            (now, key_id),
        )
        return cur.rowcount == 1
