"""HistoryStore: validation, ordering, cap, forget, threads, foreign files."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgerec.errors import EdgerecError, InputError
from edgerec.runtime.errors import HistoryStoreError
from edgerec.runtime.history import APPLICATION_ID, SCHEMA_VERSION, Event, HistoryStore


@pytest.fixture
def store(tmp_path: Path):
    with HistoryStore(tmp_path / "h.db", max_events_per_user=1000) as s:
        yield s


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- basics ----------------------------------------------------------------------------


def test_record_and_history_in_time_order(store: HistoryStore) -> None:
    store.record("alice", "b", 20.0)
    store.record("alice", "a", 10.0)  # arrives late, sorts first
    store.record("alice", "c", 30, event_type="purchase")
    store.record("bob", "x", 5.0)
    assert store.history("alice") == [
        Event("alice", "a", 10.0, "view"),
        Event("alice", "b", 20.0, "view"),
        Event("alice", "c", 30.0, "purchase"),
    ]
    assert store.count("alice") == 3
    assert store.count("bob") == 1
    assert store.count("nobody") == 0
    assert store.history("nobody") == []
    assert store.users() == ["alice", "bob"]


def test_equal_timestamps_keep_insertion_order(store: HistoryStore) -> None:
    for item in ["z", "a", "m", "b"]:
        store.record("u", item, 7.0)
    store.record_many([("u", "q", 7.0), ("u", "c", 7.0)])
    assert [e.item for e in store.history("u")] == ["z", "a", "m", "b", "q", "c"]
    assert [e.item for e in store.history("u", limit=3)] == ["b", "q", "c"]


def test_limit_returns_most_recent_oldest_first(store: HistoryStore) -> None:
    store.record_many([("u", f"i{k}", float(k)) for k in range(10)])
    assert [e.item for e in store.history("u", limit=3)] == ["i7", "i8", "i9"]
    assert store.history("u", limit=0) == []
    assert len(store.history("u", limit=100)) == 10
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InputError):
            store.history("u", limit=bad)  # type: ignore[arg-type]


def test_default_timestamp_is_now_and_datetime_accepted(store: HistoryStore) -> None:
    before = time.time()
    store.record("u", "a")
    after = time.time()
    store.record("u", "b", datetime(2030, 1, 1, tzinfo=UTC))
    first, second = store.history("u")
    assert before <= first.timestamp <= after
    assert second.timestamp == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def test_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "h.db"  # parents are created
    with HistoryStore(path) as s:
        s.record("u", "a", 1.0)
        s.record_many([Event("u", "b", 2.0, "cart")])
    with HistoryStore(path) as s:
        assert s.history("u") == [Event("u", "a", 1.0), Event("u", "b", 2.0, "cart")]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_zero_byte_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with HistoryStore(path) as s:
        s.record("u", "a", 1.0)
        assert s.count("u") == 1


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_synchronous_modes(tmp_path: Path, synchronous: str) -> None:
    with HistoryStore(tmp_path / "h.db", synchronous=synchronous) as s:  # type: ignore[arg-type]
        s.record("u", "a", 1.0)
        s.sync()
        assert s.synchronous == synchronous
        level = s._wconn.execute("PRAGMA synchronous").fetchone()[0]
        assert level == {"normal": 1, "full": 2}[synchronous]


def test_sync_with_a_reader_holding_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.record("u", "a", 1.0)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM events").fetchone()  # pins a WAL snapshot
            s.record("u", "b", 2.0)
            s.sync()  # cannot checkpoint past the reader: fsyncs the WAL itself
        finally:
            reader.close()
        s.sync()
        assert [e.item for e in s.history("u")] == ["a", "b"]


# -- validation ------------------------------------------------------------------------

BAD_IDS = [None, 1, 1.5, b"bytes", "", ["a"], "bad\ud800surrogate"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_user_or_item_raise_input_error_and_store_nothing(
    store: HistoryStore, bad: object
) -> None:
    with pytest.raises(InputError, match="user id"):
        store.record(bad, "item", 1.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="item id"):
        store.record("user", bad, 1.0)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        store.record("user", "item", 1.0, event_type=bad)  # type: ignore[arg-type]
    assert store.users() == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -1, -0.5, "1", True])
def test_bad_timestamps_raise_input_error(store: HistoryStore, bad: object) -> None:
    with pytest.raises(InputError, match="timestamp"):
        store.record("u", "a", bad)  # type: ignore[arg-type]
    assert store.count("u") == 0


def test_input_error_is_an_edgerec_error_with_exit_code_2(store: HistoryStore) -> None:
    with pytest.raises(EdgerecError) as info:
        store.record(None, "a")  # type: ignore[arg-type]
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_events_per_user": 0},
        {"max_events_per_user": 2.5},
        {"max_events_per_user": True},
        {"synchronous": "off"},
        {"busy_timeout": -1},
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(InputError):
        HistoryStore(tmp_path / "h.db", **kwargs)


def test_record_many_is_all_or_nothing(store: HistoryStore) -> None:
    events = [("u", "a", 1.0), ("u", "b", 2.0), ("u", None, 3.0), ("u", "d", 4.0)]
    with pytest.raises(InputError, match="event 2"):
        store.record_many(events)
    assert store.count("u") == 0
    with pytest.raises(InputError):
        store.record_many("not events")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="event 0"):
        store.record_many([("only-user",)])
    with pytest.raises(InputError, match="unknown keys"):
        store.record_many([{"user": "u", "item": "a", "ts": 1}])


def test_record_many_accepts_tuples_mappings_events(store: HistoryStore) -> None:
    n = store.record_many(
        [
            ("u", "a"),
            ("u", "b", 5.0),
            ("u", "c", 6.0, "cart"),
            {"user": "u", "item": "d", "timestamp": 7.0},
            {"user": "v", "item": "e", "event_type": "like"},
            Event("u", "f", 8.0, "purchase"),
        ]
    )
    assert n == 6
    assert store.record_many([]) == 0
    assert [(e.item, e.event_type) for e in store.history("u")] == [
        ("b", "view"),
        ("c", "cart"),
        ("d", "view"),
        ("f", "purchase"),
        ("a", "view"),  # no timestamp: now
    ]
    assert store.history("v")[0].event_type == "like"


def test_record_many_without_timestamps_keeps_given_order(store: HistoryStore) -> None:
    store.record_many([("u", item) for item in "qwerty"])
    assert "".join(e.item for e in store.history("u")) == "qwerty"


# -- per-user cap ----------------------------------------------------------------------


def test_cap_trims_oldest(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.db", max_events_per_user=5) as s:
        for k in range(8):
            s.record("u", f"i{k}", float(k))
        s.record("other", "x", 0.0)
        assert s.count("u") == 5
        assert [e.item for e in s.history("u")] == ["i3", "i4", "i5", "i6", "i7"]
        s.record("u", "old", 1.0)  # older than everything kept: trimmed at once
        assert [e.item for e in s.history("u")] == ["i3", "i4", "i5", "i6", "i7"]
        s.record_many([("u", f"j{k}", 100.0) for k in range(7)])  # one batch over the cap
        assert [e.item for e in s.history("u")] == ["j2", "j3", "j4", "j5", "j6"]
        assert s.count("u") == 5
        assert s.count("other") == 1


def test_cap_with_equal_timestamps_trims_first_inserted(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.db", max_events_per_user=3) as s:
        for item in "abcde":
            s.record("u", item, 1.0)
        assert [e.item for e in s.history("u")] == ["c", "d", "e"]


def test_reopen_with_smaller_cap_trims(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with HistoryStore(path, max_events_per_user=10) as s:
        s.record_many([("u", f"i{k}", float(k)) for k in range(10)])
        s.record_many([("v", "a", 1.0)])
    with HistoryStore(path, max_events_per_user=4) as s:
        assert s.count("u") == 4
        assert [e.item for e in s.history("u")] == ["i6", "i7", "i8", "i9"]
        assert s.count("v") == 1


# -- forget ----------------------------------------------------------------------------


def test_forget_removes_user_and_leaves_no_trace_in_files(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.record_many([("SECRET-USER", f"SECRET-ITEM-{k}", float(k)) for k in range(200)])
        s.record("keep", "kept-item", 1.0)
        assert s.forget("SECRET-USER") == 200
        assert s.forget("SECRET-USER") == 0
        assert s.forget("never-seen") == 0
        assert s.count("SECRET-USER") == 0
        assert s.history("SECRET-USER") == []
        assert s.users() == ["keep"]
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("h.db"))
        assert b"SECRET" not in on_disk
        assert b"kept-item" in on_disk
        s.record("SECRET-USER", "again", 2.0)  # the user may come back
        assert [e.item for e in s.history("SECRET-USER")] == ["again"]
    with HistoryStore(path) as s, pytest.raises(InputError):
        s.forget(None)  # type: ignore[arg-type]


# -- threads ---------------------------------------------------------------------------


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_concurrent_writers_and_readers(tmp_path: Path, synchronous: str) -> None:
    threads, per_thread = 6, 60
    errors: list[BaseException] = []
    with HistoryStore(tmp_path / "h.db", synchronous=synchronous) as s:  # type: ignore[arg-type]

        def writer(t: int) -> None:
            try:
                for k in range(per_thread):
                    if k % 10 == 0:
                        s.record_many([(f"t{t}", f"m{k}", float(k)), ("shared", f"{t}-{k}", 0.0)])
                    else:
                        s.record(f"t{t}", f"i{k}", float(k))
                        s.record("shared", f"{t}-{k}", 0.0)
            except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
                errors.append(exc)

        def reader() -> None:
            try:
                for _ in range(50):
                    s.history("shared", limit=20)
                    s.users()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        pool += [threading.Thread(target=reader) for _ in range(2)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        assert errors == []
        assert s.count("shared") == threads * per_thread
        for t in range(threads):
            assert s.count(f"t{t}") == per_thread
            assert [e.timestamp for e in s.history(f"t{t}")] == [
                float(k) for k in range(per_thread)
            ]
        # insertion order among equal timestamps is per writer order
        shared = [e.item for e in s.history("shared")]
        for t in range(threads):
            mine = [i for i in shared if i.startswith(f"{t}-")]
            assert mine == [f"{t}-{k}" for k in range(per_thread)]


def test_concurrent_records_are_group_committed(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.db", synchronous="full") as s:
        real_write = s._write
        transactions: list[int] = []

        def slow_write(rows):
            transactions.append(len(rows))
            if len(transactions) == 1:
                time.sleep(0.1)  # while the first commit is slow, the other threads queue up
            real_write(rows)

        s._write = slow_write  # type: ignore[method-assign]
        pool = [threading.Thread(target=s.record, args=("u", f"i{t}", 1.0)) for t in range(8)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        assert s.count("u") == 8
        assert sum(transactions) == 8
        assert len(transactions) < 8  # at least one transaction carried several callers


def test_write_failure_raises_and_store_stays_usable(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.db") as s:
        real_write = s._write

        def broken(rows):
            raise sqlite3.OperationalError("disk I/O error")

        s._write = broken  # type: ignore[method-assign]
        with pytest.raises(HistoryStoreError, match="not stored"):
            s.record("u", "a", 1.0)
        s._write = real_write  # type: ignore[method-assign]
        s.record("u", "b", 2.0)
        assert [e.item for e in s.history("u")] == ["b"]


# -- lifecycle -------------------------------------------------------------------------


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    s = HistoryStore(tmp_path / "h.db")
    s.record("u", "a", 1.0)
    s.close()
    s.close()  # idempotent
    assert s.closed
    assert "closed" in repr(s)
    for call in (
        lambda: s.record("u", "b"),
        lambda: s.record_many([("u", "b")]),
        lambda: s.history("u"),
        lambda: s.count("u"),
        lambda: s.users(),
        lambda: s.forget("u"),
        lambda: s.sync(),
    ):
        with pytest.raises(HistoryStoreError, match="closed"):
            call()


# -- files that are not a history store ------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"hello, I am a text file\n" * 10,
        bytes(range(256)) * 8,
        b"SQLite format 2\x00" + b"\x00" * 100,
    ],
)
def test_non_database_file_is_refused_and_untouched(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(payload)
    with pytest.raises(HistoryStoreError, match="not a SQLite database") as info:
        HistoryStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal/-shm left


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('ada')")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(HistoryStoreError, match="not an edgerec history store") as info:
        HistoryStore(path)
    assert str(path) in str(info.value) and "contacts" in str(info.value)
    assert _digest(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    conn.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    HistoryStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(HistoryStoreError, match="newer"):
        HistoryStore(path)
    assert _digest(path) == before


def test_damaged_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    HistoryStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE events")
    conn.commit()
    conn.close()
    with pytest.raises(HistoryStoreError, match="damaged"):
        HistoryStore(path)


def test_truncated_database_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with HistoryStore(path) as s:
        s.record_many([("u", f"i{k}", float(k)) for k in range(500)])
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 200)  # valid magic, garbage after it
    with pytest.raises(HistoryStoreError, match=str(path.name)):
        s2 = HistoryStore(path)
        s2.history("u")
        s2.close()


def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HistoryStoreError, match="directory"):
        HistoryStore(tmp_path)
