"""Every byte a device sends during sync: no item id, no event, nothing but protocol."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from tests.coordinator.conftest import sync_all
from tests.coordinator.harness import ENROLL_KEY, NUM_ITEMS, Tap, item_id

ALLOWED_BODIES = {
    "/v1/enroll": {"enroll_key"},
    "advertise": {"type", "version", "round_id", "client_id", "c_pk", "s_pk", "b_commit"},
    "shares": {"type", "version", "round_id", "client_id", "ciphertexts"},
    "masked": {"type", "version", "round_id", "client_id", "length", "data"},
    "unmask": {"type", "version", "round_id", "client_id", "b_shares", "s_sk_shares"},
}
B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def _strings_and_ints(obj, strings: list[str], ints: list[int]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            strings.append(k)
            _strings_and_ints(v, strings, ints)
    elif isinstance(obj, list):
        for v in obj:
            _strings_and_ints(v, strings, ints)
    elif isinstance(obj, bool | float):
        raise AssertionError(f"unexpected {type(obj).__name__} in a device request: {obj!r}")
    elif isinstance(obj, int):
        ints.append(obj)
    elif isinstance(obj, str):
        strings.append(obj)


def test_no_item_ids_or_events_leave_the_device(server, make_devices):
    taps = [Tap(server.transport) for _ in range(6)]
    devices = [make_devices(1, first=i, transport=taps[i])[0] for i in range(6)]
    sync_all(devices)
    server.open_round(cohort_target=6, min_cohort=4, noise_multiplier=0.5, clip=0.5)
    reports = sync_all(devices)
    assert all(r.finished and not r.error for r in reports)
    assert server.http.get("/v1/status").json()["head_version"] == 1

    # item ids and the user id contain "-", which base64 never does: no false alarms
    history_words = {item_id(i) for i in range(NUM_ITEMS)} | {"user-owner", "purchase"}
    phases_seen = set()
    for dev, tap in zip(devices, taps, strict=True):
        assert tap.sent, "nothing captured"
        for method, url, headers, body in tap.sent:
            everything = (method + url + json.dumps(headers)).encode() + body
            for word in history_words:
                assert word.encode() not in everything, (word, url)
            assert b"1700000" not in everything  # event timestamps
            path = urlsplit(url).path
            query = urlsplit(url).query
            assert re.fullmatch(r"(since=\d+)?", query), url
            if method == "GET":
                assert body == b""
                assert re.fullmatch(
                    rf"/v1/(head|rounds/current|rounds/\d+|rounds/\d+/devices/"
                    rf"{dev.device_id}/(keys|shares|unmask))",
                    path,
                ), path
                continue
            assert method == "POST"
            kind = path if path == "/v1/enroll" else path.rsplit("/", 1)[1]
            assert re.fullmatch(rf"/v1/rounds/\d+/devices/{dev.device_id}/{kind}", path) or (
                kind == "/v1/enroll"
            ), path
            payload = json.loads(body)
            assert set(payload) == ALLOWED_BODIES[kind], (kind, set(payload))
            phases_seen.add(kind)
            strings: list[str] = []
            ints: list[int] = []
            _strings_and_ints(payload, strings, ints)
            for s in strings:
                assert (
                    B64.match(s)
                    or re.fullmatch(r"[0-9]+", s)
                    or s in ALLOWED_BODIES.get(kind, set())
                    or s in ("advertise", "shares", "masked_input", "unmask_response")
                    or re.fullmatch(r"[0-9a-f]{8}-\d+", s)  # round name
                    or s == ENROLL_KEY
                ), s
            for i in ints:  # version, client ids, vector length: nothing else
                assert i == 1 or i == NUM_ITEMS or i > 2**20, i
    assert phases_seen == {"/v1/enroll", "advertise", "shares", "masked", "unmask"}
