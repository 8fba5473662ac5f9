"""Several coordinators on one PostgreSQL database, in one test process (fast).

Two full coordinator apps (each its own engine, SecAgg cache and connection pool)
share one database the way ``serve --workers 2`` processes do; every device request
goes to the next app in turn, so each app must catch up on messages the other one
stored before it checks a message, answers a download or closes a phase. The real
multi-process runs, with ``kill -9``, are in ``test_multiprocess.py``.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import edgerec.runtime.sync_training as sync_mod
from edgerec.coordinator.storage import StorageError, open_storage
from edgerec.federated.fixedpoint import to_signed
from edgerec.runtime.sync import SyncClient
from tests.coordinator.conftest import build_server, sync_all
from tests.coordinator.harness import ENROLL_KEY, FakeClock, TinyModel, db_snapshot, make_store


class Alternate(httpx.BaseTransport):
    """Sends each request to the next of several in-process apps."""

    def __init__(self, transports: list[Any]) -> None:
        self.transports = transports
        self._next = itertools.count()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            transport = self.transports[next(self._next) % len(self.transports)]
        return transport.handle_request(request)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Each device's fixed-point update before masking."""
    seen: list[np.ndarray] = []
    real = sync_mod.privatize

    def spy(delta, params, rng=None):
        out = real(delta, params, rng)
        seen.append(to_signed(out.values))
        return out

    monkeypatch.setattr(sync_mod, "privatize", spy)
    return seen


@pytest.fixture
def two_servers(tmp_path: Path, pg_cluster: Any):
    url = pg_cluster.new_schema()
    clock = FakeClock()
    servers = [build_server(tmp_path / f"s{i}", clock, db=url) for i in range(2)]
    for s in servers:
        s.coordinator.storage.share()
    yield servers
    for s in servers:
        s.http.close()
        s.coordinator.close()


def _devices(tmp: Path, n: int, transport: Any) -> list[SyncClient]:
    out = []
    for i in range(n):
        client = SyncClient(
            "http://coord", TinyModel(make_store(tmp / f"history-{i}.db", i)),
            tmp / f"device-{i}", enroll_key=ENROLL_KEY, transport=transport,
            rng=np.random.default_rng(900 + i), durable=False,
            min_noise_multiplier=0.0, min_cohort=2,
        )  # fmt: skip
        client.enroll()
        out.append(client)
    return out


def test_two_coordinators_on_one_database_publish_the_exact_sum_once(
    two_servers, tmp_path, recorded
):
    a, b = two_servers
    devices = _devices(tmp_path, 12, Alternate([a.transport, b.transport]))
    try:
        sync_all(devices)  # head v0
        rnd = a.open_round(cohort_target=12, min_cohort=6, clip=0.5)
        reports = sync_all(devices)
        assert all(r.finished and not r.error for r in reports), reports
        for s in (a, b):  # both see the same published round
            status = s.http.get("/v1/status").json()
            assert status["head_version"] == 1 and status["rounds_done"] == 1
        with a.coordinator.storage.read() as tx:
            head = tx.latest_head()
            assert tx.count_messages(rnd.round_id, "upload") == 12
        frac = 2.0 ** head.metadata["frac_bits"]
        assert len(recorded) == 12 and head.metadata["survivors"] == 12
        np.testing.assert_allclose(
            head.global_bias, np.sum(recorded, axis=0) / frac / 12, atol=1e-6
        )
        assert len(db_snapshot(a.db, (("heads", "version"),))["heads"]) == 2  # v0, v1: once
        # each engine applied messages the other one stored (the catch-up path ran)
        assert a.coordinator.rounds._transitions.live.catch_ups > 0
        assert b.coordinator.rounds._transitions.live.catch_ups > 0
    finally:
        for d in devices:
            d.close()
            d.store.close()


def test_a_coordinator_with_a_stale_cache_replays_instead_of_reusing_it(two_servers, tmp_path):
    """B caches the round at 'advertise'; A closes that phase; B must replay, not reuse."""
    a, b = two_servers
    route = Alternate([a.transport])
    devices = _devices(tmp_path, 6, route)
    try:
        sync_all(devices)
        a.open_round(cohort_target=6, min_cohort=6, clip=0.5)
        route.transports = [b.transport]
        assert "advertise" in devices[0].sync().sent  # B stores and caches one
        route.transports = [a.transport]
        for d in devices[1:]:
            d.sync()  # A stores the rest and closes the phase
        with a.coordinator.storage.read() as tx:
            assert tx.active_round().state == "share"
        route.transports = [b.transport]  # from now on everything goes through B
        reports = sync_all(devices)
        assert all(r.finished and not r.error for r in reports), reports
        assert b.http.get("/v1/status").json()["head_version"] == 1
    finally:
        for d in devices:
            d.close()
            d.store.close()


def test_sqlite_cannot_be_shared(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with pytest.raises(StorageError, match="PostgreSQL"):
            storage.share()
    finally:
        storage.close()


def test_serve_lock_keeps_single_and_shared_deployments_apart(pg_cluster):
    url = pg_cluster.new_schema()
    single, shared1, shared2, late_single = (open_storage(url) for _ in range(4))
    shared1.share()
    shared2.share()
    try:
        with shared1.serve_lock(), shared2.serve_lock():  # shared servers coexist
            refused = pytest.raises(StorageError, match="--workers N / --shared-db")
            with refused, late_single.serve_lock():
                pass
        refused = pytest.raises(StorageError, match="only process")
        with single.serve_lock(), refused, shared1.serve_lock():  # single refuses everyone
            pass
    finally:
        for s in (single, shared1, shared2, late_single):
            s.close()
