"""Fixtures of the coordinator tests: the real app in-process (no socket), devices."""

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

FAST = ServerConfig(device_rate=1e6, device_burst=10**6, anon_rate=1e6, anon_burst=10**6)


@dataclass
class Server:
    """The coordinator under test and a plain HTTP client bound to it."""

    coordinator: Coordinator
    app: Any
    transport: Any
    http: httpx.Client
    db_path: Path
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
        return self.coordinator.rounds.open_round(RoundConfig(**kw))

    def admin(self) -> dict[str, str]:
        return bearer(ADMIN_TOKEN)


def build_server(
    tmp_path: Path, clock: FakeClock, config: ServerConfig = FAST, synchronous: str = "normal"
) -> Server:
    """The app on a fresh database. Fast tests skip fsync (``synchronous=normal``): they
    test logic, not the disk; the crash tests with a real process use the default FULL."""
    db_path = tmp_path / "coord.db"
    coordinator = Coordinator(
        SqliteStorage(db_path, synchronous=synchronous),
        MODEL,
        EnrollKeys([ENROLL_KEY]),
        admin_token=ADMIN_TOKEN,
        config=config,
        clock=clock,
    )
    app = create_app(coordinator, ticker=False)
    transport = asgi_transport(app)
    http = httpx.Client(transport=transport, base_url="http://coord")
    return Server(coordinator, app, transport, http, db_path, clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> Iterator[Server]:
    srv = build_server(tmp_path, clock)
    yield srv
    srv.http.close()
    srv.transport.close()
    srv.coordinator.close()


@pytest.fixture
def make_devices(server: Server, tmp_path: Path) -> Iterator[Callable[..., list[SyncClient]]]:
    """``make_devices(n)``: n enrolled SyncClients, each with its own history store."""
    made: list[SyncClient] = []

    def make(n: int, first: int = 0, transport: Any = None, **kw: Any) -> list[SyncClient]:
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
