"""``SyncClient.sync()`` never raises on anything a coordinator sends (issue 13, §5).

A small ASGI app answers each request of the real client with the next answer that
``hypothesis`` drew — plausible answers with fields dropped or retyped, bad base64,
truncated or deeply nested JSON, non-objects, huge bodies, odd status codes and
headers — through the real in-process transport (``edgerec.simulation.asgi``). Every
sync must come back as a :class:`SyncReport` whose status is one of ``STATUSES``
and not the catch-all ``error``: each failure is one the client recognises.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("httpx")

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgerec.federated.protocol import RoundParams  # noqa: E402
from edgerec.runtime.sync import STATUSES, SyncClient, SyncReport  # noqa: E402
from edgerec.simulation.asgi import asgi_transport  # noqa: E402
from tests.coordinator.harness import NUM_ITEMS, TinyModel  # noqa: E402

DEVICE = "d-" + "12" * 12
TOKEN = DEVICE + "." + "A" * 43
#: the client is told to refuse answers above this (the fuzzer sends some)
CAP = 64 * 1024

PARAMS = RoundParams.new(
    "fuzz-1",
    head_version=0,
    cohort_target=4,
    min_cohort=2,
    deadline=2e9,
    clip=1.0,
    noise_multiplier=1.0,
    frac_bits=16,
    vector_length=NUM_ITEMS,
    neighbour_degree=2,
    threshold=2,
).to_wire()
BIAS = np.zeros(NUM_ITEMS, "<f4").tobytes()

TEMPLATES: list[dict[str, Any]] = [
    {"device_id": DEVICE, "token": TOKEN},
    {
        "version": 0,
        "changed": True,
        "model_id": "m",
        "length": NUM_ITEMS,
        "metadata": {"epsilon": 0.0},
        "dtype": "float32-le",
        "global_bias": base64.b64encode(BIAS).decode(),
        "sha256": hashlib.sha256(BIAS).hexdigest(),
    },
    {
        "round": 1,
        "name": "fuzz-1",
        "state": "advertise",
        "base_version": 0,
        "selected": True,
        "client_id": 7,
        "sent": {"advertise": False, "share": False, "upload": False, "unmask": False},
        "survivor": False,
        "params": PARAMS,
        "training": {},
        "sampling_rate": 1.0,
        "delta": 1e-5,
    },
    {"round": 1, "name": "fuzz-1", "state": "done", "selected": True, "my_privacy": {}},
    {"device_id": DEVICE, "token": TOKEN, "expires_at": 1.0},
    {"round": None},
]

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.just("!!not base64!!"),
    st.just({"nested": {"x": 1}}),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A template answer with fields dropped, retyped or re-encoded."""
    body = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=3)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(junk)
    if "params" in body and isinstance(body["params"], dict) and draw(st.booleans()):
        field = draw(st.sampled_from(sorted(body["params"])))
        body["params"][field] = draw(junk)
    text = json.dumps(body, allow_nan=True).encode()
    if draw(st.integers(0, 5)) == 0:  # truncated JSON
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return text


bodies = st.one_of(
    mutated(),
    mutated(),
    mutated(),
    st.binary(max_size=64),
    st.just(b"[" * 5000 + b"]" * 5000),  # deeper than the JSON parser's recursion
    st.just(b'{"a": "' + b"x" * (CAP + 10) + b'"}'),  # over the client's size cap
    st.sampled_from([b"[]", b"null", b"3", b'"text"', b"{}", b""]),
)
answers = st.tuples(
    st.sampled_from(
        [200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 409, 410, 413, 422]
        + [429, 500, 503, 599]
    ),  # fmt: skip
    st.dictionaries(
        st.sampled_from(["retry-after", "x-edgerec-token-refresh", "content-type"]),
        st.sampled_from(["1", "-5", "1e308", "nan", "soon", "", "application/json"]),
        max_size=2,
    ),
    bodies,
)


def legit(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """What a healthy coordinator would answer (a round that wants this device)."""
    if path == "/v1/enroll":
        return 201, {}, json.dumps(TEMPLATES[0]).encode()
    if path.startswith("/v1/head"):
        return 200, {}, json.dumps(TEMPLATES[1]).encode()
    if path.startswith("/v1/rounds/") and "/devices/" not in path:
        return 200, {}, json.dumps(TEMPLATES[2]).encode()
    if path == "/v1/token":
        return 200, {}, json.dumps(TEMPLATES[4]).encode()
    if method == "POST":
        return 200, {}, json.dumps({"accepted": "x", "round": 1, "client_id": 7}).encode()
    return 404, {}, b'{"error": "not_found", "detail": "nothing here"}'


def fuzz_app(script: list[Any]):
    """An ASGI app that answers request ``i`` with ``script[i]``, or as a healthy
    coordinator would where that is None (and once the script runs out)."""
    queue = list(script)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        path = scope["path"] + (
            f"?{scope['query_string'].decode()}" if scope["query_string"] else ""
        )
        answer = queue.pop(0) if queue else None
        status, headers, body = answer or legit(scope["method"], path)
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    return app


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=st.lists(st.none() | answers, min_size=1, max_size=12), enrolled=st.booleans())
def test_sync_never_raises_on_what_the_server_sends(script, enrolled):
    transport = asgi_transport(fuzz_app(script))
    with tempfile.TemporaryDirectory() as state:
        client = SyncClient(
            "http://coord",
            TinyModel(),
            Path(state),
            token=TOKEN if enrolled else None,
            enroll_key="fuzz-enroll-key-0123456789",
            transport=transport,
            durable=False,
            min_noise_multiplier=0.0,
            min_cohort=2,
            max_response_bytes=CAP,
        )
        try:
            rep = client.sync()
            again = client.sync()  # whatever the first call saved is readable again
        finally:
            client.close()
            transport.close()
    for r in (rep, again):
        event(f"status {r.status}, sent {r.sent}")
        assert isinstance(r, SyncReport)
        assert r.status in STATUSES and r.status != "error", r
        json.dumps(r.to_json())  # the app can log it


def test_a_huge_answer_is_not_read(tmp_path):
    transport = asgi_transport(fuzz_app([(200, {}, b"x" * (CAP + 1))]))
    client = SyncClient(
        "http://coord", TinyModel(), tmp_path, token=TOKEN, transport=transport,
        max_response_bytes=CAP,
    )  # fmt: skip
    rep = client.sync()
    client.close()
    transport.close()
    assert rep.status == "bad_response" and f"larger than {CAP} bytes" in rep.error
