"""Test helpers for the coordinator: a fake clock, a tiny model, devices, DB snapshots.

No TensorFlow and no real bundle artifacts: :class:`TinyModel` scores with a fixed
random matrix, which is all :class:`~edgerec.federated.local.LocalTrainer` needs.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edgerec.bundle import BundleWriter
from edgerec.features import FeatureSpec
from edgerec.federated.fixedpoint import to_signed
from edgerec.runtime.history import HistoryStore
from edgerec.vocab import Vocab

NUM_ITEMS = 40
ENROLL_KEY = "test-enroll-key-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
MODEL = {"id": "tiny-test", "version": "1", "vector_length": NUM_ITEMS}


def item_id(i: int) -> str:
    """Raw item ids that are easy to spot in captured bytes."""
    return f"sku-ZQX{i:04d}"


class FakeClock:
    """A settable wall clock."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TinyModel:
    """What SyncClient needs from a model: ``spec``, ``vocab``, ``score_rows``, ``store``."""

    def __init__(self, store: HistoryStore | None = None, seed: int = 0) -> None:
        self.spec = FeatureSpec(max_len=8, num_items=NUM_ITEMS)
        self.vocab = Vocab([item_id(i) for i in range(NUM_ITEMS)])
        self.store = store
        rng = np.random.default_rng(seed)
        self.table = rng.normal(0, 1, size=(NUM_ITEMS + 2, NUM_ITEMS)).astype(np.float32)
        self.global_bias: np.ndarray | None = None

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.table[np.asarray(rows)].mean(axis=1)


def make_store(path: Path, device: int, length: int = 24) -> HistoryStore:
    """A history store with one user walking the catalog (different per device)."""
    store = HistoryStore(path)
    rng = np.random.default_rng(1000 + device)
    start = int(rng.integers(NUM_ITEMS))
    for j in range(length):
        step = 1 if rng.random() < 0.8 else int(rng.integers(2, 5))
        start = (start + step) % NUM_ITEMS
        store.record(
            "user-owner", item_id(start), timestamp=1_700_000_000 + j, event_type="purchase"
        )
    store.sync()
    return store


def make_bundle(path: Path, num_items: int = NUM_ITEMS) -> Path:
    """A minimal bundle (manifest + vocab, no artifacts): enough for ``serve --bundle``."""
    vocab = Vocab([item_id(i) for i in range(num_items)])
    with BundleWriter(path) as w:
        w.add_bytes("vocab.json", json.dumps(vocab.to_json()).encode())
        w.finish(
            {
                "model": {"id": MODEL["id"], "version": MODEL["version"]},
                "feature_spec": FeatureSpec(max_len=8, num_items=num_items).to_json(),
                "status": "accepted",
            }
        )
    return path


def decode_x(state_file: Path) -> np.ndarray:
    """The device's fixed-point update (before masking) from its saved round state."""
    state = json.loads(state_file.read_text())["client"]
    raw = base64.b64decode(state["x"])
    return to_signed(np.frombuffer(raw, "<u4").astype(np.uint32))


ROUND_TABLES = (
    ("rounds", "round_id"),
    ("participants", "round_id, device_id"),
    ("messages", "round_id, device_id, phase"),
    ("ciphertexts", "round_id, recipient, sender"),
    ("heads", "version"),
)


def db_snapshot(db: Path | str, tables=ROUND_TABLES) -> dict[str, Any]:
    """Every row of the round-related tables (what a refused request must not change).

    ``db``: a SQLite file, or a PostgreSQL URL (read with its own connection).
    """
    if isinstance(db, str):
        import psycopg

        conn = psycopg.connect(db)
    else:
        conn = sqlite3.connect(db)
    try:
        out = {}
        for table, order in tables:
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        return out
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


class Tap(httpx.BaseTransport):
    """An httpx transport wrapper: records every request, can cut off or tamper.

    Args:
        inner: the transport to call (swappable: ``tap.inner = other``).
        drop_after: once a request whose path ends with this suffix got a 2xx answer,
            every later request fails with ``ConnectError`` (the device "drops out").
        tamper: ``(path, body_dict) -> body_dict`` applied to JSON POST bodies.
    """

    def __init__(self, inner: Any, drop_after: str | None = None, tamper=None) -> None:
        self.inner = inner
        self.drop_after = drop_after
        self.tamper = tamper
        self.dropped = False
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.dropped:
            raise httpx.ConnectError("device is offline", request=request)
        body = request.read()
        if self.tamper is not None and request.method == "POST" and body:
            changed = self.tamper(request.url.path, json.loads(body))
            if changed is not None:
                body = json.dumps(changed).encode()
                headers = {k: v for k, v in request.headers.items() if k != "content-length"}
                request = httpx.Request(request.method, request.url, headers=headers, content=body)
        self.sent.append((request.method, str(request.url), dict(request.headers), body))
        response = self.inner.handle_request(request)
        if (
            self.drop_after
            and request.url.path.endswith(self.drop_after)
            and request.method == "POST"
            and response.status_code < 300
        ):
            self.dropped = True
        return response

    def close(self) -> None:
        pass


class RawDevice:
    """A device driven by hand over HTTP (full control over every message it sends)."""

    def __init__(self, http: httpx.Client, device_id: str, token: str) -> None:
        self.http = http
        self.device_id = device_id
        self.token = token
        self.clients: dict[int, Any] = {}

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)

    def view(self) -> dict[str, Any]:
        r = self.http.get("/v1/rounds/current", headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def path(self, rnd: int, what: str, device_id: str | None = None) -> str:
        return f"/v1/rounds/{rnd}/devices/{device_id or self.device_id}/{what}"

    def post(self, rnd: int, what: str, body: Any, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.auth)
        return self.http.post(self.path(rnd, what), json=body, **kw)

    def get(self, rnd: int, what: str) -> httpx.Response:
        return self.http.get(self.path(rnd, what), headers=self.auth)

    def client(self, view: dict[str, Any]):
        from edgerec.federated.protocol import RoundParams
        from edgerec.federated.secagg import SecAggClient

        rnd = view["round"]
        if rnd not in self.clients:
            params = RoundParams.from_wire(view["params"])
            self.clients[rnd] = SecAggClient(view["client_id"], params)
        return self.clients[rnd]

    def advertise(self) -> httpx.Response:
        view = self.view()
        return self.post(view["round"], "advertise", self.client(view).advertise().to_wire())

    def share(self) -> httpx.Response:
        from edgerec.federated.protocol import KeysBundle

        view = self.view()
        c = self.client(view)
        keys = self.get(view["round"], "keys")
        assert keys.status_code == 200, keys.text
        msg = c.share_keys(KeysBundle.from_wire(keys.json(), c.params))
        return self.post(view["round"], "shares", msg.to_wire())

    def masked(self, x: np.ndarray | None = None) -> dict[str, Any]:
        """The masked-input message (not sent)."""
        from edgerec.federated.protocol import ShareDelivery

        view = self.view()
        c = self.client(view)
        r = self.get(view["round"], "shares")
        assert r.status_code == 200, r.text
        if x is None:
            x = np.arange(c.params.vector_length, dtype=np.uint32) % 7
        return c.masked_input(x, ShareDelivery.from_wire(r.json(), c.params)).to_wire()

    def unmask(self) -> httpx.Response:
        from edgerec.federated.protocol import UnmaskRequest

        view = self.view()
        c = self.client(view)
        r = self.get(view["round"], "unmask")
        assert r.status_code == 200, r.text
        msg = c.unmask(UnmaskRequest.from_wire(r.json(), c.params))
        return self.post(view["round"], "unmask", msg.to_wire())
