"""Fleet lifecycle (issue 13, section 4): revocation, token expiry and rotation,
enrollment keys with quotas, failed-authentication limits, no database work on the
event loop, and the version-2 schema migration — each on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from edgerec.cli import main
from edgerec.coordinator.config import ServerConfig
from edgerec.coordinator.migrations import LATEST, MIGRATIONS
from edgerec.coordinator.security import EnrollKeys, hash_token, new_token
from edgerec.coordinator.service import Coordinator
from edgerec.federated import wire
from edgerec.runtime.sync import SyncClient
from edgerec.simulation.asgi import asgi_transport
from tests.coordinator.conftest import FAST, build_server, open_db, sync_all
from tests.coordinator.harness import (
    ENROLL_KEY,
    MODEL,
    FakeClock,
    TinyModel,
    bearer,
    make_store,
)

TTL = FAST.token_ttl_s
WINDOW = FAST.token_refresh_s


def url_of(db: Path | str) -> str:
    return f"sqlite:///{db}" if isinstance(db, Path) else db


def head(server, token: str) -> httpx.Response:
    return server.http.get("/v1/head", headers=bearer(token))


# ---------------------------------------------------------------------- revocation
def test_a_revoked_device_is_refused_on_its_next_request(server):
    device_id, token = server.enroll()
    assert head(server, token).status_code == 200
    assert server.http.post(f"/v1/admin/devices/{device_id}/revoke").status_code == 401
    r = server.http.post(f"/v1/admin/devices/{device_id}/revoke", headers=server.admin())
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = head(server, token)
    assert r.status_code == 403 and r.json()["error"] == wire.E_DEVICE_REVOKED
    assert device_id in r.json()["detail"]
    missing = server.http.post("/v1/admin/devices/d-nobody/revoke", headers=server.admin())
    assert missing.status_code == 404
    info = server.http.get(f"/v1/admin/devices/{device_id}", headers=server.admin()).json()
    assert info["revoked"] and info["revoked_at"] == server.clock.now


def test_revoke_device_command(server, capsys):
    device_id, token = server.enroll()
    code = main(["-q", "coordinator", "revoke-device", "--db", url_of(server.db), device_id])
    assert code == 0 and "revoked" in capsys.readouterr().out
    assert head(server, token).status_code == 403
    assert main(["-q", "coordinator", "revoke-device", "--db", url_of(server.db), "d-x"]) == 2


# ---------------------------------------------------------------------- expiry and rotation
def test_tokens_expire(server):
    _, token = server.enroll()
    server.clock.advance(TTL - WINDOW - 1)
    r = head(server, token)
    assert r.status_code == 200 and wire.TOKEN_REFRESH_HEADER not in r.headers
    server.clock.advance(WINDOW + 2)
    r = head(server, token)
    assert r.status_code == 401 and r.json()["error"] == wire.E_TOKEN_EXPIRED


def test_rotation_keeps_the_old_token_until_the_new_one_is_used(server):
    device_id, old = server.enroll()
    server.clock.advance(TTL - WINDOW + 1)
    r = head(server, old)
    assert float(r.headers[wire.TOKEN_REFRESH_HEADER]) == pytest.approx(
        server.clock.now - (TTL - WINDOW + 1) + TTL
    )
    # the answer to a first rotation is lost (crash, network): the old token still works
    lost = server.http.post("/v1/token", headers=bearer(old)).json()["token"]
    assert head(server, old).status_code == 200
    # the next rotation replaces the unused successor
    r = server.http.post("/v1/token", headers=bearer(old))
    new = r.json()["token"]
    assert r.status_code == 200 and new.startswith(device_id + ".")
    assert r.json()["expires_at"] == pytest.approx(server.clock.now + TTL)
    assert head(server, lost).status_code == 401
    assert head(server, old).status_code == 200  # not yet confirmed: both work
    r = head(server, new)  # first use confirms the rotation
    assert r.status_code == 200 and wire.TOKEN_REFRESH_HEADER not in r.headers
    assert head(server, old).status_code == 401
    server.clock.advance(TTL - 10)  # the new token has its own lifetime
    assert head(server, new).status_code == 200


def test_sync_rotates_the_token_and_survives_a_restart(server, make_devices, tmp_path):
    first, second = make_devices(2)
    old = first.token
    server.clock.advance(TTL - WINDOW + 1)
    rep = first.sync()
    assert rep.token_rotated and rep.status == "ok", rep
    saved = json.loads((first.state_dir / "credentials.json").read_text())
    assert saved["token"] == first.token != old
    assert head(server, old).status_code == 401  # the same sync already used the new one
    # a crash right after the device saved its new token, before it used it: the
    # old token still works, and a new process picks up the saved one
    old = second.token
    assert second.fetch_head() is True  # the coordinator's answer asks for a rotation
    assert second._session.refresh_requested
    assert second.rotate_token()
    assert head(server, old).status_code == 200
    again = SyncClient(
        "http://coord",
        TinyModel(second.store),
        second.state_dir,
        transport=server.transport,
        durable=False,
    )
    assert again.token == second.token != old
    rep = again.sync()
    assert rep.status == "ok" and not rep.token_rotated, rep
    assert head(server, old).status_code == 401
    server.clock.advance(TTL - WINDOW - 10)
    assert again.sync().status == "ok"


def test_an_expired_or_revoked_device_gets_a_status_not_an_exception(server, make_devices):
    first, second = make_devices(2)
    server.http.post(f"/v1/admin/devices/{first.device_id}/revoke", headers=server.admin())
    rep = first.sync()
    assert rep.status == "revoked" and "revoked" in rep.error
    server.clock.advance(TTL + 1)
    rep = second.sync()
    assert rep.status == "token_expired", rep


# ---------------------------------------------------------------------- enrollment keys
def test_enrollment_keys_have_quotas_and_can_be_revoked(server):
    r = server.http.post(
        "/v1/admin/enroll-keys", json={"label": "lab", "quota": 2}, headers=server.admin()
    )
    assert r.status_code == 201
    key, key_id = r.json()["key"], r.json()["key_id"]
    enrolled = [server.http.post("/v1/enroll", json={"enroll_key": key}) for _ in range(3)]
    assert [e.status_code for e in enrolled] == [201, 201, 403]
    assert enrolled[2].json()["error"] == wire.E_KEY_EXHAUSTED and "quota of 2" in enrolled[2].text
    listed = server.http.get("/v1/admin/enroll-keys", headers=server.admin()).json()
    assert [(k["key_id"], k["used"], k["usable"]) for k in listed] == [(key_id, 2, False)]
    assert "key" not in listed[0] and "key_hash" not in listed[0]

    r = server.http.post("/v1/admin/enroll-keys", json={}, headers=server.admin())
    other = r.json()["key"]
    made = server.http.post("/v1/enroll", json={"enroll_key": other}).json()
    device_id, token = made["device_id"], made["token"]
    r = server.http.post(
        f"/v1/admin/enroll-keys/{r.json()['key_id']}/revoke?revoke_devices=true",
        headers=server.admin(),
    )
    assert r.status_code == 200 and r.json()["revoked_devices"] == [device_id]
    again = server.http.post("/v1/enroll", json={"enroll_key": other})
    assert again.status_code == 403 and again.json()["error"] == wire.E_KEY_REVOKED
    assert head(server, token).status_code == 403  # its device went with it
    bad = server.http.post("/v1/admin/enroll-keys", json={"quota": 0}, headers=server.admin())
    assert bad.status_code == 422


def test_enroll_key_commands(server, capsys):
    url = url_of(server.db)
    args = ["-q", "coordinator", "enroll-key"]
    assert main([*args, "add", "--db", url, "--quota", "1", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert server.http.post("/v1/enroll", json={"enroll_key": made["key"]}).status_code == 201
    assert server.http.post("/v1/enroll", json={"enroll_key": made["key"]}).status_code == 403
    assert main([*args, "list", "--db", url]) == 0
    assert f"{made['key_id']}  used 1/1  active" in capsys.readouterr().out
    assert main([*args, "revoke", "--db", url, made["key_id"]]) == 0
    assert main([*args, "list", "--db", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])[0]["revoked"] is True
    assert main([*args, "add", "--db", url, "--quota", "0"]) == 2


def test_database_keys_open_enrollment_without_a_key_file(tmp_path, clock, new_db):
    db = new_db(tmp_path)
    co = Coordinator(open_db(db), MODEL, None, admin_token="a" * 20, config=FAST, clock=clock)
    try:
        with pytest.raises(Exception, match="enrollment is closed"):
            co.devices.enroll("anything-long-enough")
        _, secret = co.devices.create_enroll_key(quota=1)
        device_id, token = co.devices.enroll(secret)
        assert co.devices.authenticate(f"Bearer {token}").enroll_key_id is not None
        with pytest.raises(Exception, match="quota"):
            co.devices.enroll(secret)
    finally:
        co.close()


# ---------------------------------------------------------------------- failed authentication
def _from(app, host: str) -> httpx.Client:
    """A client whose requests come from ``host`` (a real in-process transport)."""
    transport = asgi_transport(app)
    transport._inner = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.Client(transport=transport, base_url="http://coord")


def test_failed_authentication_is_rate_limited_per_address_and_device(tmp_path, clock, new_db):
    cfg = ServerConfig(
        device_rate=1e6, device_burst=10**6, anon_rate=1e6, anon_burst=10**6,
        auth_fail_rate=0.01, auth_fail_burst=3,
    )  # fmt: skip
    server = build_server(tmp_path, clock, config=cfg, db=new_db(tmp_path))
    try:
        victim_id, victim_token = server.enroll()
        _, bystander = server.enroll()
        attacker, honest = _from(server.app, "10.0.0.66"), _from(server.app, "10.0.0.7")
        forged = new_token(victim_id)
        codes = [attacker.get("/v1/head", headers=bearer(forged)).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        r = attacker.get("/v1/head", headers=bearer(bystander))  # the address is blocked
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # the claimed device id is blocked from every address, other devices are not
        assert honest.get("/v1/head", headers=bearer(victim_token)).status_code == 429
        assert honest.get("/v1/head", headers=bearer(bystander)).status_code == 200
        # bad enrollment keys and bad admin tokens count too
        bad = [attacker.post("/v1/enroll", json={"enroll_key": "x" * 20}) for _ in range(4)]
        assert [b.status_code for b in bad] == [401, 401, 401, 429]
        admin = [attacker.get("/v1/admin/rounds", headers=bearer("nope")) for _ in range(4)]
        assert [a.status_code for a in admin] == [401, 401, 401, 429]
        assert honest.get("/v1/admin/rounds", headers=server.admin()).status_code == 200
    finally:
        server.http.close()
        server.coordinator.close()


# ---------------------------------------------------------------------- event loop
def test_no_database_call_runs_on_the_event_loop(server, make_devices, monkeypatch):
    """Every read/write transaction opened while serving runs in the thread pool."""
    on_loop: list[str] = []
    storage = server.coordinator.storage

    def watch(name: str):
        inner = getattr(storage, name)

        def wrapper(*a, **kw):
            try:
                asyncio.get_running_loop()
                on_loop.append(f"{name} in {threading.current_thread().name}")
            except RuntimeError:
                pass  # no loop in this thread: the thread pool
            return inner(*a, **kw)

        monkeypatch.setattr(storage, name, wrapper)

    watch("read")
    watch("write")
    devices = make_devices(4)
    sync_all(devices)
    server.open_round(cohort_target=4, min_cohort=3)
    reports = sync_all(devices)
    assert all(r.status == "ok" and r.finished for r in reports), reports
    admin = server.admin()
    for method, path in [
        ("GET", "/v1/status"),
        ("GET", "/v1/admin/rounds"),
        ("GET", "/v1/admin/devices"),
        ("GET", "/v1/admin/enroll-keys"),
        ("POST", "/v1/admin/tick"),
        ("GET", "/metrics"),
    ]:
        assert server.http.request(method, path, headers=admin).status_code == 200, path
    assert server.http.post("/v1/token", headers=bearer(devices[0].token)).status_code == 200
    assert head(server, "d-000000000000000000000000." + "A" * 43).status_code == 401
    assert on_loop == []


# ---------------------------------------------------------------------- schema version 2
def _v1_database(db: Path | str, token: str, device_id: str) -> None:
    """A version-1 coordinator database holding one enrolled device."""
    from tests.coordinator.test_schema import open_with

    with open_with(db, MIGRATIONS[:1]) as storage:
        assert storage.schema_version == 1
        with storage.write() as tx:
            mark = "?" if isinstance(db, Path) else "%s"
            tx.conn.execute(
                f"INSERT INTO devices VALUES ({mark}, {mark}, {mark}, 0)",
                (device_id, hash_token(token), 1_000.0),
            )


def test_a_version_1_database_migrates_and_its_devices_keep_working(tmp_path, new_db):
    clock = FakeClock(time.time())  # the migration dates old tokens by the real clock
    db = new_db(tmp_path)
    device_id = "d-" + "ab" * 12
    token = new_token(device_id)
    _v1_database(db, token, device_id)
    with pytest.raises(Exception, match="coordinator migrate"):
        open_db(db)
    assert main(["-q", "coordinator", "migrate", "--db", url_of(db)]) == 0
    storage = open_db(db)
    assert (storage.schema_found, storage.schema_version) == (LATEST, LATEST)
    co = Coordinator(storage, MODEL, EnrollKeys([ENROLL_KEY]), config=FAST, clock=clock)
    try:
        # enrolled long ago, but its token counts as issued at the migration: not expired
        auth = co.devices.check(f"Bearer {token}")
        assert auth.device.device_id == device_id and auth.device.token_issued_at > 1_000.0
        assert co.devices.enroll(ENROLL_KEY)[0].startswith("d-")
    finally:
        co.close()
    if isinstance(db, Path):
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST


def test_both_backends_answer_the_fleet_queries_alike(server, make_devices):
    devices = make_devices(3)
    sync_all(devices)
    server.open_round(cohort_target=3, min_cohort=2)
    sync_all(devices)
    with server.coordinator.storage.read() as tx:
        part = tx.participation()
        listed = tx.list_devices()
    assert sorted(part) == sorted((d.device_id, 1) for d in devices)
    assert {d.device_id for d in listed} == {d.device_id for d in devices}
    assert all(d.token_issued_at == d.enrolled_at and not d.revoked for d in listed)


def test_a_device_made_without_transport_options_still_validates_floors(tmp_path):
    store = make_store(tmp_path / "h.db", 0)
    with pytest.raises(Exception, match="min_cohort must be an integer >= 2"):
        SyncClient("http://x", TinyModel(store), tmp_path / "s", min_cohort=1)
    with pytest.raises(Exception, match="min_noise_multiplier must be >= 0"):
        SyncClient("http://x", TinyModel(store), tmp_path / "s", min_noise_multiplier=-1)
    store.close()
