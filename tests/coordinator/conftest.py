"""Fixtures of the coordinator tests: the real app in-process (no socket), devices.

Every test that takes ``server`` (or ``new_db``) runs once per storage backend:
``[sqlite]`` on a file in its temp dir, ``[postgres]`` on a fresh schema of a real
PostgreSQL server that the session starts on first use (``pg_cluster``).
``-k sqlite`` / ``-k postgres`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edgerec.coordinator.app import create_app
from edgerec.coordinator.config import RoundConfig, ServerConfig
from edgerec.coordinator.security import EnrollKeys
from edgerec.coordinator.service import Coordinator
from edgerec.coordinator.sqlite import SqliteStorage
from edgerec.coordinator.storage import Storage, open_storage
from edgerec.runtime.sync import SyncClient
from edgerec.simulation.asgi import asgi_transport
from tests.coordinator.harness import (
    ADMIN_TOKEN,
    ENROLL_KEY,
    MODEL,
    FakeClock,
    TinyModel,
    bearer,
    make_store,
)

#: no rate limits, and no epsilon ceiling: most tests check the protocol's arithmetic
#: exactly, on rounds without noise (``Server.open_round`` defaults to z = 0); the
#: privacy defaults themselves are tested on a server with the default config
FAST = ServerConfig(
    device_rate=1e6, device_burst=10**6, anon_rate=1e6, anon_burst=10**6, epsilon_ceiling=None
)


@dataclass
class Server:
    """The coordinator under test and a plain HTTP client bound to it."""

    coordinator: Coordinator
    app: Any
    transport: Any
    http: httpx.Client
    db: Path | str  # the SQLite file, or the PostgreSQL URL
    clock: FakeClock

    def enroll(self) -> tuple[str, str]:
        r = self.http.post("/v1/enroll", json={"enroll_key": ENROLL_KEY})
        assert r.status_code == 201, r.text
        data = r.json()
        return data["device_id"], data["token"]

    def open_round(self, **kw: Any):
        kw.setdefault("cohort_target", 10)
        kw.setdefault("min_cohort", 5)
        kw.setdefault("deadline_s", 600)
        kw.setdefault("noise_multiplier", 0.0)
        return self.coordinator.rounds.open_round(RoundConfig(**kw))

    def admin(self) -> dict[str, str]:
        return bearer(ADMIN_TOKEN)


BACKENDS = ("sqlite", "postgres")


def open_db(db: Path | str, synchronous: str = "normal") -> Storage:
    """Storage on a SQLite file (``Path``) or a PostgreSQL URL (``str``)."""
    if isinstance(db, Path):
        return SqliteStorage(db, synchronous=synchronous)
    return open_storage(db)


def build_server(
    tmp_path: Path,
    clock: FakeClock,
    config: ServerConfig = FAST,
    synchronous: str = "normal",
    db: Path | str | None = None,
) -> Server:
    """The app on ``db`` (default: a new SQLite file in ``tmp_path``). Fast tests skip
    fsync (``synchronous=normal``; the test PostgreSQL server runs with ``fsync=off``):
    they test logic, not the disk; the crash tests with a real process use FULL."""
    db = tmp_path / "coord.db" if db is None else db
    coordinator = Coordinator(
        open_db(db, synchronous),
        MODEL,
        EnrollKeys([ENROLL_KEY]),
        admin_token=ADMIN_TOKEN,
        config=config,
        clock=clock,
    )
    app = create_app(coordinator, ticker=False)
    transport = asgi_transport(app)
    http = httpx.Client(transport=transport, base_url="http://coord")
    return Server(coordinator, app, transport, http, db, clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throw-away PostgreSQL server for the whole session (fails naming the install step)."""
    from tests.coordinator.pgcluster import PgCluster

    try:
        cluster = PgCluster().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_db(backend: str, request: pytest.FixtureRequest) -> Callable[[Path], Path | str]:
    """``new_db(folder)``: where a fresh, empty database of this test's backend lives."""
    if backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        return lambda folder: cluster.new_schema()

    def sqlite_file(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "coord.db"

    return sqlite_file


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock, new_db: Callable[[Path], Any]) -> Iterator[Server]:
    srv = build_server(tmp_path, clock, db=new_db(tmp_path))
    yield srv
    srv.http.close()
    srv.transport.close()
    srv.coordinator.close()


@pytest.fixture
def make_devices(server: Server, tmp_path: Path) -> Iterator[Callable[..., list[SyncClient]]]:
    """``make_devices(n)``: n enrolled SyncClients, each with its own history store."""
    made: list[SyncClient] = []

    def make(n: int, first: int = 0, transport: Any = None, **kw: Any) -> list[SyncClient]:
        # the tests' rounds are small and often noiseless: relax the devices' floors
        kw.setdefault("min_noise_multiplier", 0.0)
        kw.setdefault("min_cohort", 2)
        out = []
        for i in range(first, first + n):
            store = make_store(tmp_path / f"history-{i}.db", i)
            client = SyncClient(
                "http://coord",
                TinyModel(store),
                tmp_path / f"device-{i}",
                enroll_key=ENROLL_KEY,
                transport=transport or server.transport,
                rng=np.random.default_rng(500 + i),
                durable=False,
                **kw,
            )
            client.enroll()
            out.append(client)
        made.extend(out)
        return out

    yield make
    for c in made:
        c.store.close()


def sync_all(clients: list[SyncClient], rounds: int = 6) -> list[Any]:
    """Call sync() on every client repeatedly until none has anything left to do."""
    reports: list[Any] = []
    for _ in range(rounds):
        reports = [c.sync() for c in clients]
        if all(not r.waiting for r in reports):
            break
    return reports
