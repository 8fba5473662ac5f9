"""Several real ``serve`` processes on one real PostgreSQL database, one killed mid-round.

Three ``serve --shared-db`` processes (independent hosts, here on three ports) sit
behind a round-robin load balancer (:mod:`tests.coordinator.roundrobin`); dozens of
device clients run concurrently. One process is killed with ``kill -9`` while uploads
(or, in the second case, unmask responses) are in flight: the round completes on the
other two, the published sum is exact, every acknowledged upload is stored, and nothing
is published twice. ``serve
--workers 2`` (one port, two processes) gets a round of its own.

Slow: each process start imports FastAPI and uvicorn in a fresh interpreter.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import edgerec.runtime.sync_training as sync_mod
from edgerec.federated.fixedpoint import to_signed
from edgerec.runtime.sync import SyncClient
from tests.coordinator.harness import ADMIN_TOKEN, ENROLL_KEY, TinyModel, bearer, make_store
from tests.coordinator.roundrobin import RoundRobin
from tests.coordinator.test_process import ServerProcess, cli, free_port, stored_heads

pytestmark = pytest.mark.slow

DEVICES = 36


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[int, np.ndarray]:
    """Each device's fixed-point update before masking, by the thread's device."""
    seen: dict[int, np.ndarray] = {}
    lock = threading.Lock()
    real = sync_mod.privatize

    def spy(delta, params, rng=None):
        out = real(delta, params, rng)
        with lock:
            seen[len(seen)] = to_signed(out.values)
        return out

    monkeypatch.setattr(sync_mod, "privatize", spy)
    return seen


def _devices(tmp: Path, n: int, transport: httpx.BaseTransport) -> list[SyncClient]:
    return [
        SyncClient(
            "http://lb",
            TinyModel(make_store(tmp / f"history-{i}.db", i)),
            tmp / f"device-{i}",
            enroll_key=ENROLL_KEY,
            transport=transport,
            rng=np.random.default_rng(i),
            min_noise_multiplier=0.0,
            min_cohort=2,
        )  # fmt: skip
        for i in range(n)
    ]


def _sync_concurrently(pool: ThreadPoolExecutor, devices: list[SyncClient]) -> list:
    return list(pool.map(lambda d: d.sync(), devices))


def _state(url: str) -> str | None:
    rnd = httpx.get(url + "/v1/status", timeout=10).json()["round"]
    return rnd and rnd["state"]


def _drive(pool, devices, url: str, until: str, timeout: float = 45.0) -> None:
    """Devices sync concurrently, the way apps would, until the round is ``until``."""
    deadline = time.monotonic() + timeout
    while _state(url) != until:
        assert time.monotonic() < deadline, f"round stuck in {_state(url)}"
        _sync_concurrently(pool, devices)
        time.sleep(0.2)


def _open_round(url: str, n: int) -> int:
    r = httpx.post(
        url + "/v1/admin/rounds",
        headers=bearer(ADMIN_TOKEN),
        json={"cohort_target": n, "min_cohort": n // 2, "clip": 0.5,
              "noise_multiplier": 0.3, "deadline_s": 120},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["round"])


def _uploads(db: str, round_id: int) -> set[str]:
    from edgerec.coordinator.storage import open_storage

    with open_storage(db) as storage, storage.read() as tx:
        return {m.device_id for m in tx.messages(round_id, "upload", with_blob=False)}


@pytest.mark.parametrize("kill_in", ["upload", "unmask"])
def test_three_processes_one_killed_mid_round_publish_the_exact_sum_once(
    tmp_path, pg_cluster, recorded, kill_in
):
    db = pg_cluster.new_schema()
    procs = []
    for i in range(3):
        (tmp_path / f"p{i}").mkdir()
        p = ServerProcess(tmp_path / f"p{i}", db, extra=("--shared-db",))
        if procs:
            p.bundle = procs[0].bundle
        procs.append(p.start())
    lb = RoundRobin([p.port for p in procs])
    devices = _devices(tmp_path, DEVICES, lb)
    url = procs[0].url
    try:
        with ThreadPoolExecutor(12) as pool:
            assert all(r.error is None for r in _sync_concurrently(pool, devices))  # enroll
            round_id = _open_round(url, DEVICES)
            _drive(pool, devices, url, "share")
            _drive(pool, devices, url, "upload")
            if kill_in == "unmask":
                _drive(pool, devices, url, "unmask")
            # messages in flight on all three processes; one of them dies among them
            in_flight = pool.map(lambda d: d.sync(), devices)
            time.sleep(0.3 if kill_in == "upload" else 0.1)
            procs[1].kill9()
            reports = list(in_flight)
            acknowledged = {
                d.device_id for d, r in zip(devices, reports, strict=True) if "upload" in r.sent
            }
            if kill_in == "unmask":
                acknowledged = {d.device_id for d in devices}  # all before the phase closed
            assert len(acknowledged) > 0
            assert acknowledged <= _uploads(db, round_id)  # acknowledged = stored
            survivors_url = procs[2].url
            deadline = time.monotonic() + 60
            while True:
                reports = _sync_concurrently(pool, devices)
                if all(r.finished for r in reports) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        assert all(r.finished and not r.error for r in reports), reports
        status = httpx.get(survivors_url + "/v1/status").json()
        assert status["head_version"] == 1 and status["rounds_done"] == 1
        assert acknowledged <= _uploads(db, round_id)
        heads = stored_heads(db)
        assert sorted(heads) == [0, 1]  # published once
        frac = 2.0 ** devices[0]._read_json("head.json")["metadata"]["frac_bits"]
        assert len(recorded) == DEVICES  # every device privatised once, retries reuse it
        expected = np.sum(list(recorded.values()), axis=0) / frac / DEVICES
        np.testing.assert_allclose(heads[1], expected, atol=1e-6)
        assert all(lb.sent[p.port] > 0 for p in procs)  # every process served requests
    finally:
        for p in procs:
            p.stop()
        for d in devices:
            d.close()
            d.store.close()


def test_workers_serve_a_round_on_one_port_and_refuse_sqlite(tmp_path, pg_cluster):
    db = pg_cluster.new_schema()
    server = ServerProcess(tmp_path, db, extra=("--workers", "2")).start()
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    assert len(children.read_text().split()) >= 2  # the supervisor and its workers
    # one port: the kernel spreads the connections over the two workers
    devices = _devices(tmp_path, 8, RoundRobin([server.port]))
    try:
        with ThreadPoolExecutor(8) as pool:
            assert all(r.error is None for r in _sync_concurrently(pool, devices))
            _open_round(server.url, 8)
            deadline = time.monotonic() + 45
            while _state(server.url) != "done":
                assert time.monotonic() < deadline, f"round stuck in {_state(server.url)}"
                _sync_concurrently(pool, devices)
                time.sleep(0.2)
        assert sorted(stored_heads(db)) == [0, 1]
        # /metrics sums both workers' counters, whichever worker answers the scrape
        uploads = stored = len(_uploads(db, 1))
        for _ in range(6):
            with httpx.Client() as fresh:  # a new connection: may reach the other worker
                text = fresh.get(server.url + "/metrics", timeout=10).text
            line = 'edgerec_coordinator_messages_accepted_total{phase="upload"}'
            values = [float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)]
            assert values == [float(stored)], (values, stored)
        assert uploads == 8
        single = cli("serve", "--bundle", str(server.bundle), "--db", db,
                     "--port", str(free_port()))  # fmt: skip
        assert single.returncode == 2 and "--workers N / --shared-db" in single.stderr
        sqlite = cli("serve", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--workers", "2",
                     "--port", str(free_port()))  # fmt: skip
        assert sqlite.returncode == 2 and "PostgreSQL" in sqlite.stderr
    finally:
        server.stop()
        for d in devices:
            d.close()
            d.store.close()
