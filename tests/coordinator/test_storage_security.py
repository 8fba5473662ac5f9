"""Storage (URLs, schema guard, durability settings, compare-and-set) and credentials."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edgerec.coordinator.security import (
    EnrollKeys,
    RateLimiter,
    hash_token,
    new_device_id,
    new_token,
    parse_token,
    token_matches,
)
from edgerec.coordinator.sqlite import SqliteStorage
from edgerec.coordinator.storage import Head, Round, StorageError, open_storage
from edgerec.errors import InputError
from tests.coordinator.conftest import open_db


def test_open_storage_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with open_storage("sqlite:///rel/c.db") as s:
        assert s.path == Path("rel/c.db")
    assert (tmp_path / "rel" / "c.db").is_file()
    with open_storage(f"sqlite:///{tmp_path}/abs.db") as s:
        assert Path(s.path).is_absolute()
    with open_storage("sqlite://:memory:") as s, s.read() as tx:
        assert tx.latest_head() is None
    with open_storage(str(tmp_path / "plain.db")) as s:
        assert s.url.startswith("sqlite:///")
    with pytest.raises(StorageError, match="not supported"):
        open_storage("mysql://user@host/db")
    with pytest.raises(StorageError, match="sqlite:///"):
        open_storage("sqlite://relative.db")


def test_wal_and_full_sync(tmp_path: Path):
    s = SqliteStorage(tmp_path / "c.db")
    assert s._wconn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._wconn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()


def test_foreign_database_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match="not an edgerec coordinator database"):
        SqliteStorage(path)
    assert path.read_bytes() == before
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        SqliteStorage(junk)


def unique_violation(db: Path | str) -> type[Exception]:
    """What the backend of ``db`` raises for a duplicate key."""
    if isinstance(db, Path):
        return sqlite3.IntegrityError
    import psycopg

    return psycopg.errors.UniqueViolation


def test_compare_and_set_and_unique_head_per_round(tmp_path: Path, new_db):
    db = new_db(tmp_path)
    s = open_db(db)
    with s.write() as tx:
        rid = tx.insert_round(Round(0, 0, "advertise", {"a": 1}, b"s" * 32, 1.0, 2.0, 2.0))
    with s.write() as tx:
        assert tx.update_round(rid, "advertise", state="share") is True
        assert tx.update_round(rid, "advertise", state="failed") is False
    with s.read() as tx:
        assert tx.get_round(rid).state == "share"
    bias = np.arange(5, dtype=np.float32)
    with s.write() as tx:
        tx.insert_head(Head(1, rid, 3.0, bias, {"v": 1}))
    with pytest.raises(unique_violation(db)), s.write() as tx:
        tx.insert_head(Head(2, rid, 4.0, bias, {"v": 2}))  # the same round twice
    with s.write() as tx:  # a failed statement inside a savepoint spoils nothing else
        with pytest.raises(unique_violation(db)), tx.savepoint():
            tx.insert_head(Head(2, rid, 4.0, bias, {"v": 2}))
        assert tx.update_round(rid, "share", state="upload") is True
    with s.read() as tx:
        head = tx.latest_head()
    assert head.version == 1
    np.testing.assert_array_equal(head.global_bias, bias)
    s.close()


def test_tokens_are_random_parsed_and_compared_by_hash():
    device = new_device_id()
    token = new_token(device)
    assert parse_token(token) == device
    assert parse_token("x" + token) is None and parse_token(device) is None
    assert token != new_token(device)
    stored = hash_token(token)
    assert len(stored) == 32 and token.encode() not in stored
    assert token_matches(token, stored)
    assert not token_matches(token[:-1] + ("A" if token[-1] != "A" else "B"), stored)


def test_enroll_keys_file(tmp_path: Path):
    f = tmp_path / "keys"
    f.write_text("# comment\n\nfirst-key-0123456789\nsecond-key-0123456789\n")
    keys = EnrollKeys.from_file(f)
    assert keys.check("second-key-0123456789") and not keys.check("third-key-0123456789")
    f.write_text("short\n")
    with pytest.raises(InputError, match=">= 16"):
        EnrollKeys.from_file(f)
    f.write_text("# nothing\n")
    with pytest.raises(InputError, match="no enrollment key"):
        EnrollKeys.from_file(f)
    assert not EnrollKeys().enabled


def test_rate_limiter_token_bucket():
    now = [0.0]
    rl = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [rl.allow("a")[0] for _ in range(4)] == [True, True, True, False]
    allowed, retry = rl.allow("a")
    assert not allowed and retry == pytest.approx(0.5)
    assert rl.allow("b")[0]  # per key
    now[0] += 0.5
    assert rl.allow("a")[0] and not rl.allow("a")[0]
    assert RateLimiter(rate=0, burst=1).allow("x") == (True, 0.0)
