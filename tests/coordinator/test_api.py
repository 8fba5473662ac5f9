"""Bad input and attacks against the HTTP API: each gets a clear 4xx and changes nothing."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

from tests.coordinator.harness import ENROLL_KEY, NUM_ITEMS, RawDevice, bearer, db_snapshot


@pytest.fixture
def trio(server):
    """Three raw devices in a round (cohort 3) that is now in its upload phase."""
    devices = [RawDevice(server.http, *server.enroll()) for _ in range(3)]
    server.open_round(cohort_target=3, min_cohort=2)
    for d in devices:
        assert d.advertise().status_code == 200
    for d in devices:
        assert d.share().status_code == 200
    assert devices[0].view()["state"] == "upload"
    return devices


def unchanged(server):
    """Context manager: assert the round tables are identical afterwards."""

    class _Same:
        def __enter__(self):
            self.before = db_snapshot(server.db)

        def __exit__(self, *exc):
            if exc[0] is None:
                assert db_snapshot(server.db) == self.before, "a refused request wrote"

    return _Same()


# ------------------------------------------------------------------ authentication
def test_enrollment_issues_a_token_stored_only_hashed(server):
    device_id, token = server.enroll()
    assert token.startswith(device_id + ".") and len(token.split(".")[1]) == 43
    with server.coordinator.storage.read() as tx:
        row = tx.get_device(device_id)
    assert row.token_hash == hashlib.sha256(token.encode()).digest()
    server.coordinator.storage.close()
    if isinstance(server.db, str):  # PostgreSQL: every stored device row, as text
        raw = repr(db_snapshot(server.db, (("devices", "device_id"), ("meta", "key")))).encode()
    else:
        raw = b"".join(p.read_bytes() for p in server.db.parent.glob("coord.db*"))
    assert token.split(".")[1].encode() not in raw and token.encode() not in raw


@pytest.mark.parametrize("key", ["wrong-key-wrong-key-wrong", ""])
def test_enrollment_with_a_wrong_key_is_refused(server, key):
    with unchanged(server):
        r = server.http.post("/v1/enroll", json={"enroll_key": key})
    assert r.status_code in (401, 422)
    with server.coordinator.storage.read() as tx:
        assert tx.count_devices() == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Basic abc"},
        {"authorization": "Bearer "},
        {"authorization": "Bearer not-a-token"},
        {"authorization": "Bearer d-000000000000000000000000." + "A" * 43},
    ],
)
def test_unauthenticated_requests_get_401(server, trio, headers):
    rnd = trio[0].view()["round"]
    body = trio[0].masked()
    with unchanged(server):
        r = server.http.post(trio[0].path(rnd, "masked"), json=body, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert server.http.get("/v1/head", headers=headers).status_code == 401
        assert server.http.get("/v1/rounds/current", headers=headers).status_code == 401


def test_wrong_secret_for_a_real_device_is_401(server, trio):
    d = trio[0]
    forged = d.device_id + "." + base64.urlsafe_b64encode(b"\x01" * 32).decode().rstrip("=")
    rnd = d.view()["round"]
    with unchanged(server):
        r = server.http.post(d.path(rnd, "masked"), json=d.masked(), headers=bearer(forged))
    assert r.status_code == 401


def test_another_devices_token_cannot_act_as_you(server, trio):
    victim, attacker = trio[0], trio[1]
    rnd = victim.view()["round"]
    body = victim.masked()
    with unchanged(server):
        for method, what in (("POST", "masked"), ("GET", "shares"), ("GET", "keys")):
            r = server.http.request(
                method,
                victim.path(rnd, what),
                json=body if method == "POST" else None,
                headers=attacker.auth,
            )
            assert r.status_code == 403, (what, r.text)
            assert r.json()["error"] == "forbidden"
    # the attacker replaying the victim's message under its own id is refused too
    with unchanged(server):
        r = attacker.post(rnd, "masked", body)
    assert r.status_code == 422 and "client_id" in r.text


def test_admin_routes_need_the_admin_token(server, trio):
    cfg = {"cohort_target": 3, "min_cohort": 2}
    for headers in ({}, trio[0].auth, bearer("nope")):
        r = server.http.post("/v1/admin/rounds", json=cfg, headers=headers)
        assert r.status_code == 401
    assert server.http.get("/v1/admin/rounds", headers=server.admin()).status_code == 200


# ------------------------------------------------------------------ body validation
def test_oversized_bodies_get_413_before_reading(server, trio):
    rnd = trio[0].view()["round"]
    limit = server.coordinator.config.body_limit(NUM_ITEMS)
    big = b'{"x": "' + b"A" * (limit + 10) + b'"}'
    with unchanged(server):
        r = server.http.post(
            trio[0].path(rnd, "masked"),
            content=big,
            headers={**trio[0].auth, "content-type": "application/json"},
        )
        assert r.status_code == 413
        assert "too large" in r.json()["detail"]

        def chunks():  # no Content-Length: counted while streaming
            for _ in range(limit // 4096 + 2):
                yield b"A" * 4096

        r = server.http.post(trio[0].path(rnd, "masked"), content=chunks(), headers=trio[0].auth)
        assert r.status_code == 413
        r = server.http.post("/v1/enroll", content=big)
        assert r.status_code == 413


def test_malformed_json_is_400(server, trio):
    rnd = trio[0].view()["round"]
    with unchanged(server):
        for raw in (b"{", b"not json", b'{"type": "masked_input",', b"\xff\xfe"):
            r = server.http.post(
                trio[0].path(rnd, "masked"),
                content=raw,
                headers={**trio[0].auth, "content-type": "application/json"},
            )
            assert r.status_code == 400, (raw, r.text)
            assert r.json()["error"] == "malformed_json"


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(arr.astype("<u4").tobytes()).decode()


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.update(length=NUM_ITEMS - 1),  # length field wrong
        lambda b: b.update(data=_b64(np.zeros(NUM_ITEMS - 1))) or b.update(length=NUM_ITEMS - 1),
        lambda b: b.update(data=_b64(np.zeros(NUM_ITEMS + 5))),  # data longer than length
        lambda b: b.update(data=b["data"][:-4] + "!!!!"),  # not base64
        lambda b: b.update(data=base64.b64encode(b"\x00" * (4 * NUM_ITEMS - 2)).decode()),
        lambda b: b.update(type="advertise"),
        lambda b: b.update(version=2),
        lambda b: b.update(round_id="someone-else-7"),
        lambda b: b.update(client_id=12345),
        lambda b: b.update(client_id=-1),
        lambda b: b.update(client_id="12"),
        lambda b: b.update(extra="field"),
        lambda b: b.pop("data"),
        lambda b: b.update(data=[1.0] * NUM_ITEMS),  # floats instead of encoded uint32
        lambda b: b.update(data="NaN"),
    ],
)
def test_wrong_shape_length_or_encoding_is_422(server, trio, change):
    d = trio[0]
    rnd = d.view()["round"]
    body = d.masked()
    change(body)
    with unchanged(server):
        r = d.post(rnd, "masked", body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid"


def test_non_object_json_and_wrong_messages_are_422(server, trio):
    d = trio[0]
    rnd = d.view()["round"]
    with unchanged(server):
        for body in ([], 3, "x", {"type": "masked_input"}):
            assert d.post(rnd, "masked", body).status_code == 422
        r = server.http.post(d.path(rnd, "masked"), content=b"null", headers=d.auth)
        assert r.status_code == 422
        r = server.http.post(d.path(rnd, "masked"), headers=d.auth)  # no body at all
        assert r.status_code == 400
        shares = {
            "type": "shares",
            "version": 1,
            "round_id": "x",
            "client_id": 1,
            "ciphertexts": {"0": "AA=="},
        }
        assert d.post(rnd, "shares", shares).status_code in (409, 422)


def test_replayed_upload_is_409_and_an_identical_retry_is_idempotent(server, trio):
    d = trio[0]
    rnd = d.view()["round"]
    body = d.masked()
    first = d.post(rnd, "masked", body)
    assert first.status_code == 200
    assert first.json()["sha256"] == hashlib.sha256(base64.b64decode(body["data"])).hexdigest()
    with unchanged(server):
        again = d.post(rnd, "masked", body)
        assert again.status_code == 200 and again.json() == first.json()
        other = dict(body, data=_b64(np.ones(NUM_ITEMS)))
        r = d.post(rnd, "masked", other)
        assert r.status_code == 409 and r.json()["error"] == "conflict"


def test_phase_order_is_enforced(server, trio):
    d = trio[0]
    view = d.view()
    rnd = view["round"]
    with unchanged(server):
        r = d.post(rnd, "advertise", d.client(view).advertise().to_wire())
        assert r.status_code == 200  # identical retry of an accepted message
        r = d.get(rnd, "unmask")
        assert r.status_code == 409 and r.json()["error"] == "too_early"
        resp = {
            "type": "unmask_response",
            "version": 1,
            "round_id": view["name"],
            "client_id": view["client_id"],
            "b_shares": {},
            "s_sk_shares": {},
        }
        r = d.post(rnd, "unmask", resp)
        assert r.status_code == 409 and r.json()["error"] == "too_early"
        r = d.get(999, "keys")
        assert r.status_code == 404


def test_upload_for_a_closed_round_is_refused(server, trio):
    late = RawDevice(server.http, *server.enroll())
    bodies = [d.masked() for d in trio]
    rnd = trio[0].view()["round"]
    for d, b in zip(trio, bodies, strict=True):
        assert d.post(rnd, "masked", b).status_code == 200
    for d in trio:
        assert d.unmask().status_code == 200
    server.coordinator.rounds.advance()
    assert trio[0].view()["state"] == "done"
    with unchanged(server):
        # the cohort's own retry is still answered (idempotent), anything new is refused
        assert trio[0].post(rnd, "masked", bodies[0]).status_code == 200
        r = trio[0].post(rnd, "masked", dict(bodies[0], data=_b64(np.ones(NUM_ITEMS))))
        assert r.status_code == 409
        r = late.post(rnd, "masked", dict(bodies[0], client_id=1))
        assert r.status_code == 410 and r.json()["error"] == "round_closed"
        assert late.get(rnd, "keys").status_code == 410
        r = server.http.post(f"/v1/admin/rounds/{rnd}/abort", headers=server.admin())
        assert r.status_code == 410


def test_devices_outside_the_round_are_refused(server):
    members = [RawDevice(server.http, *server.enroll()) for _ in range(2)]
    server.open_round(cohort_target=2, min_cohort=2)
    server.clock.advance(1)
    late = RawDevice(server.http, *server.enroll())
    view = late.view()
    assert view["selected"] is False and view["client_id"] is None
    with unchanged(server):
        fake = dict(members[0].client(members[0].view()).advertise().to_wire())
        r = late.post(view["round"], "advertise", fake)
        assert r.status_code == 403 and r.json()["error"] == "not_selected"
    for m in members:
        assert m.advertise().status_code == 200
    with unchanged(server):
        assert late.get(view["round"], "keys").status_code == 403


def test_round_full_and_reused_keys_are_refused(server):
    devices = [RawDevice(server.http, *server.enroll()) for _ in range(3)]
    server.open_round(cohort_target=3, min_cohort=2, phase_timeout_s=100)
    # enrolled at the very second the round opened: eligible, sampled with q = 1
    devices.append(RawDevice(server.http, *server.enroll()))
    assert devices[0].advertise().status_code == 200
    view1 = devices[1].view()
    ad0 = devices[0].client(devices[0].view()).advertise().to_wire()
    ad1 = devices[1].client(view1).advertise().to_wire()
    with unchanged(server):
        r = devices[1].post(view1["round"], "advertise", dict(ad1, c_pk=ad0["c_pk"]))
        assert r.status_code == 422 and "fresh" in r.text
        r = devices[1].post(view1["round"], "advertise", dict(ad1, s_pk=ad1["c_pk"]))
        assert r.status_code == 422
    assert devices[1].advertise().status_code == 200
    assert devices[2].advertise().status_code == 200
    with unchanged(server):
        r = devices[3].advertise()
        assert r.status_code == 409 and r.json()["error"] in ("round_full", "phase_closed")


def test_shares_must_cover_exactly_the_neighbours(server):
    devices = [RawDevice(server.http, *server.enroll()) for _ in range(3)]
    server.open_round(cohort_target=3, min_cohort=2)
    for d in devices:
        assert d.advertise().status_code == 200
    d = devices[0]
    view = d.view()
    from edgerec.federated.protocol import KeysBundle

    c = d.client(view)
    keys = KeysBundle.from_wire(d.get(view["round"], "keys").json(), c.params)
    msg = c.share_keys(keys).to_wire()
    one = next(iter(msg["ciphertexts"]))
    with unchanged(server):
        short = dict(msg, ciphertexts={one: msg["ciphertexts"][one]})
        assert d.post(view["round"], "shares", short).status_code == 422
        bad = dict(msg, ciphertexts={**msg["ciphertexts"], "77": msg["ciphertexts"][one]})
        assert d.post(view["round"], "shares", bad).status_code == 422
        wrong_len = dict(msg, ciphertexts={k: "AAAA" for k in msg["ciphertexts"]})
        assert d.post(view["round"], "shares", wrong_len).status_code == 422
    assert d.post(view["round"], "shares", msg).status_code == 200


def test_unmask_response_must_match_what_the_device_holds(server, trio):
    rnd = trio[0].view()["round"]
    for d in trio:
        assert d.post(rnd, "masked", d.masked()).status_code == 200
    d = trio[0]
    view = d.view()
    assert view["state"] == "unmask"
    from edgerec.federated.protocol import UnmaskRequest

    c = d.client(view)
    msg = c.unmask(UnmaskRequest.from_wire(d.get(rnd, "unmask").json(), c.params)).to_wire()
    with unchanged(server):
        both = dict(msg, s_sk_shares=dict(msg["b_shares"]))  # reveal both secrets: refused
        assert d.post(rnd, "unmask", both).status_code == 422
        empty = dict(msg, b_shares={})
        assert d.post(rnd, "unmask", empty).status_code == 422
    assert d.post(rnd, "unmask", msg).status_code == 200


def test_rate_limit_gives_429_with_retry_after(tmp_path, clock):
    from edgerec.coordinator.config import ServerConfig
    from tests.coordinator.conftest import build_server

    srv = build_server(
        tmp_path, clock, ServerConfig(device_rate=0.5, device_burst=3, anon_rate=0.5, anon_burst=2)
    )
    try:
        _, token = srv.enroll()
        codes = [srv.http.get("/v1/head", headers=bearer(token)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = srv.http.get("/v1/head", headers=bearer(token))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        srv.enroll()
        r = srv.http.post("/v1/enroll", json={"enroll_key": ENROLL_KEY})
        assert r.status_code == 429
    finally:
        srv.http.close()
        srv.transport.close()
        srv.coordinator.close()


def test_openapi_schema_is_served(server):
    r = server.http.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    for path in (
        "/v1/enroll",
        "/v1/status",
        "/v1/head",
        "/v1/rounds/current",
        "/v1/rounds/{round_id}/devices/{device_id}/advertise",
        "/v1/rounds/{round_id}/devices/{device_id}/masked",
        "/v1/rounds/{round_id}/devices/{device_id}/unmask",
        "/v1/admin/rounds",
    ):
        assert path in paths, path
    body = paths["/v1/rounds/{round_id}/devices/{device_id}/masked"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["additionalProperties"] is False
    json.dumps(spec)
