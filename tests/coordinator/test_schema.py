"""The versioned schema both backends share: creation, old SQLite files, newer and
older versions, ``edgerec coordinator migrate`` (each on SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgerec.cli import main
from edgerec.coordinator.migrations import LATEST, MIGRATIONS, Migration, SchemaVersionError
from edgerec.coordinator.sqlite import APPLICATION_ID
from edgerec.coordinator.storage import open_storage
from tests.coordinator.harness import db_snapshot

#: a second step, for testing upgrades (never shipped)
EXTRA = Migration(
    LATEST + 1,
    "test: a notes table",
    {
        "sqlite": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        "postgres": "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
    },
)


def url_of(db: Path | str) -> str:
    return f"sqlite:///{db}" if isinstance(db, Path) else db


def set_version(db: Path | str, version: int) -> None:
    """Pretend another edgerec wrote ``db`` at schema ``version``."""
    if isinstance(db, Path):
        with sqlite3.connect(db) as conn:
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("INSERT INTO schema_version VALUES (?, 'future', 0)", (version,))
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s, 'future', 0)", (version,))


def open_with(db: Path | str, steps, migrate: bool = False):
    if isinstance(db, Path):
        from edgerec.coordinator.sqlite import SqliteStorage

        return SqliteStorage(db, migrate=migrate, steps=steps)
    from edgerec.coordinator.postgres import PostgresStorage

    return PostgresStorage(db, migrate=migrate, steps=steps)


def test_a_new_database_records_every_step(new_db, tmp_path: Path):
    db = new_db(tmp_path)
    with open_storage(url_of(db)) as s:
        assert (s.schema_found, s.schema_version) == (None, LATEST)
    rows = db_snapshot(db, (("schema_version", "version"),))["schema_version"]
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
    with open_storage(url_of(db)) as s:  # reopening changes nothing
        assert (s.schema_found, s.schema_version) == (LATEST, LATEST)


def test_a_newer_database_is_refused_naming_both_versions(new_db, tmp_path: Path, capsys):
    db = new_db(tmp_path)
    open_storage(url_of(db)).close()
    set_version(db, 99)
    with pytest.raises(SchemaVersionError, match=rf"version 99.*versions 1 to {LATEST}"):
        open_storage(url_of(db))
    code = main(["-q", "coordinator", "migrate", "--db", url_of(db)])
    assert code == 2 and "schema version 99" in capsys.readouterr().err


def test_an_older_database_needs_migrate(new_db, tmp_path: Path):
    db = new_db(tmp_path)
    open_storage(url_of(db)).close()  # at LATEST; EXTRA is one step ahead of it
    steps = (*MIGRATIONS, EXTRA)
    with pytest.raises(SchemaVersionError, match="run 'edgerec coordinator migrate"):
        open_with(db, steps)
    with open_with(db, steps, migrate=True) as s:
        assert (s.schema_found, s.schema_version) == (LATEST, EXTRA.version)
    with open_with(db, steps) as s:
        assert s.schema_version == EXTRA.version
    assert db_snapshot(db, (("notes", "id"),)) == {"notes": []}


def test_migrate_command(new_db, tmp_path: Path, capsys):
    import json

    db = new_db(tmp_path)
    assert main(["-q", "coordinator", "migrate", "--db", url_of(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["found"] is None and out["version"] == out["latest"] == LATEST
    assert main(["-q", "coordinator", "migrate", "--db", url_of(db)]) == 0
    assert "is current" in capsys.readouterr().out


def test_sqlite_files_from_before_the_version_table_still_open(tmp_path: Path):
    """A file the previous release wrote: v1 tables, user_version 1, no schema_version."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0].sql["sqlite"])
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO meta VALUES ('model_id', 'm')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match="run 'edgerec coordinator migrate"):
        open_storage(f"sqlite:///{path}")  # version 1 < LATEST: the operator migrates
    with open_storage(f"sqlite:///{path}", migrate=True) as s, s.read() as tx:
        assert (s.schema_found, s.schema_version) == (1, LATEST)
        assert tx.get_meta("model_id") == "m"
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version")
        assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST


def test_a_foreign_postgres_database_is_refused_untouched(pg_cluster):
    import psycopg

    url = pg_cluster.new_schema()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id INT)")
    with pytest.raises(Exception, match="not an edgerec coordinator database"):
        open_storage(url)
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    assert tables == [("accounts",)]


def test_unreachable_postgres_is_a_clear_error(pg_cluster, tmp_path: Path):
    from edgerec.coordinator.postgres import PostgresStorage
    from edgerec.coordinator.storage import StorageError

    url = f"postgresql://nobody:secret@/nowhere?host={tmp_path}&port=1"
    with pytest.raises(StorageError, match="cannot connect") as err:
        PostgresStorage(url, connect_timeout=1)
    assert "secret" not in str(err.value)
