"""The on-device history store on this device's own storage: durable round trip
across a close/reopen, WAL mode, the per-user cap, ``recommend_for``, and the
durable ``record()`` rate (recorded, not asserted).

Point ``--store-dir`` at the storage the application will use (e.g. the SD card,
``/var/lib/edgerec``); by default pytest's temporary folder is used, which may be
a tmpfs on some systems (the report records the filesystem type).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from devicekit import filesystem_of

from edgerec.runtime import HistoryStore, Recommender


@pytest.fixture
def store_dir(pytestconfig, tmp_path: Path):
    base = pytestconfig.getoption("--store-dir")
    if not base:
        yield tmp_path
        return
    Path(base).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgerec-device-", dir=base) as d:
        yield Path(d)


def test_round_trip_survives_reopen(bundle_path, reference_histories, store_dir, device_report):
    db = store_dir / "history.db"
    events = [
        (user, item, 1_700_000_000.0 + i, "view" if i % 3 else "purchase")
        for user, hist in (("alice", reference_histories[0]), ("bob", reference_histories[-1]))
        for i, item in enumerate(hist)
    ]
    with HistoryStore(db) as store:
        for user, item, ts, kind in events:
            store.record(user, item, ts, kind)
        store.record("carol", "not-in-the-catalog", 1_700_000_000.0, "view")
    conn = sqlite3.connect(db)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert mode.lower() == "wal"

    with HistoryStore(db) as store:
        assert store.users() == ["alice", "bob", "carol"]
        for user in ("alice", "bob"):
            got = [(e.user, e.item, e.timestamp, e.event_type) for e in store.history(user)]
            assert got == [e for e in events if e[0] == user]
        with Recommender.open(bundle_path, store=store) as rec:
            for user, hist in (("alice", reference_histories[0]), ("bob", reference_histories[-1])):
                via_store = [r.item_id for r in rec.recommend_for(user, k=5)]
                direct = [r.item_id for r in rec.recommend(hist, k=5)]
                assert via_store == direct
            # only unknown items: popularity prior, no crash
            assert len(rec.recommend_for("carol", k=5)) == 5
    device_report.section("history_store").update(
        {"path": str(db), "filesystem": filesystem_of(db), "journal_mode": mode}
    )


def test_cap_keeps_the_newest(store_dir):
    with HistoryStore(store_dir / "capped.db", max_events_per_user=5) as store:
        for i in range(12):
            store.record("u", f"i{i}", 1_700_000_000.0 + i)
        assert store.count("u") == 5
        assert [e.item for e in store.history("u")] == [f"i{i}" for i in range(7, 12)]


def test_record_rate(store_dir, device_report):
    """Durable ``record()`` calls per second on this storage (never asserted)."""
    n = 300
    with HistoryStore(store_dir / "rate.db") as store:
        t0 = time.perf_counter()
        for i in range(n):
            store.record("rate", f"i{i % 50}", 1_700_000_000.0 + i)
        elapsed = time.perf_counter() - t0
        assert store.count("rate") == n
    device_report.section("history_store").update(
        {
            "record_calls": n,
            "record_per_s": round(n / elapsed, 1),
            "rate_filesystem": filesystem_of(store_dir),
        }
    )
