"""Heads name the bundle they belong to (issue 13 §3): the real coordinator app
in-process, real :class:`SyncClient` devices, on SQLite and on PostgreSQL.

The devices' model is the harness's :class:`TinyModel` stating a bundle identity
(``model_id`` / ``model_version``, what ``sync_training.adapt_model`` reads from a
model that is not a Recommender); the OTA path with real bundles and a real updater
is in ``tests/runtime/test_update_heads.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edgerec.coordinator.security import EnrollKeys
from edgerec.coordinator.service import Coordinator
from edgerec.coordinator.storage import Head, StorageError
from edgerec.runtime.sync import STATUSES, SyncClient
from tests.coordinator.conftest import FAST, open_db, sync_all
from tests.coordinator.harness import ENROLL_KEY, MODEL, NUM_ITEMS, TinyModel, make_store

BOUND = (MODEL["id"], MODEL["version"])


class BundleModel(TinyModel):
    """A TinyModel that says which bundle it is."""

    def __init__(self, store: Any, model_id: str, model_version: str) -> None:
        super().__init__(store)
        self.model_id, self.model_version = model_id, model_version


@pytest.fixture
def device(server, tmp_path: Path) -> Iterator[Callable[..., SyncClient]]:
    """``device(i, bundle=BOUND, transport=None, state=None)``: an enrolled SyncClient
    whose model is bundle ``(model_id, model_version)``."""
    stores: list[Any] = []

    def make(
        i: int,
        bundle: tuple[str, str] = BOUND,
        transport: Any = None,
        state: Path | None = None,
        enroll: bool = True,
    ) -> SyncClient:
        store = make_store(tmp_path / f"history-{i}-{len(stores)}.db", i)
        stores.append(store)
        client = SyncClient(
            "http://coord",
            BundleModel(store, *bundle),
            state or tmp_path / f"device-{i}",
            enroll_key=ENROLL_KEY,
            transport=transport or server.transport,
            rng=np.random.default_rng(700 + i),
            durable=False,
            min_noise_multiplier=0.0,
            min_cohort=2,
        )
        if enroll:
            client.enroll()
        return client

    yield make
    for s in stores:
        s.close()


def _insert_head(server, version: int, bias: np.ndarray, metadata: dict) -> None:
    """A head as an older coordinator stored it (written straight into the database)."""
    import hashlib

    sha = hashlib.sha256(bias.astype("<f4").tobytes()).hexdigest()
    with server.coordinator.storage.write() as tx:
        tx.insert_head(Head(version, None, server.clock(), bias, {**metadata, "sha256": sha}))


def test_every_head_and_round_names_the_bound_bundle(server, device):
    devices = [device(i) for i in range(5)]
    head = devices[0]._call("GET", "/v1/head").json()
    assert (head["model_id"], head["model_version"]) == BOUND
    assert (head["metadata"]["model_id"], head["metadata"]["model_version"]) == BOUND
    sync_all(devices)
    server.open_round(cohort_target=5, min_cohort=5)
    view = devices[0]._call("GET", "/v1/rounds/current").json()
    assert (view["model_id"], view["model_version"]) == BOUND
    reports = sync_all(devices)
    assert all(r.finished and not r.error and r.status == "ok" for r in reports), reports
    with server.coordinator.storage.read() as tx:
        published = tx.latest_head()
    assert published.version == 1
    assert (published.metadata["model_id"], published.metadata["model_version"]) == BOUND
    sync_all(devices)
    assert all(d.head_version == 1 and d.bundle_mismatch is None for d in devices)
    saved = json.loads((devices[0].state_dir / "head.json").read_text())
    assert saved["bundle"] == {"model_id": BOUND[0], "model_version": BOUND[1]}


@pytest.mark.parametrize("other", [(MODEL["id"], "2"), ("another-model", MODEL["version"])])
def test_a_head_of_another_bundle_is_not_applied_and_its_rounds_are_sat_out(server, device, other):
    bound = [device(i) for i in range(5)]
    stranger = device(9, other)
    rep = stranger.sync()
    assert rep.status == "bundle_mismatch" and rep.status in STATUSES and not rep.error
    assert f"{other[0]}@{other[1]}" in rep.bundle_mismatch
    assert f"{BOUND[0]}@{BOUND[1]}" in rep.bundle_mismatch
    assert stranger.head_version is None and stranger.global_bias is None
    assert stranger.model.target.global_bias is None, "the head must not reach the model"
    assert not (stranger.state_dir / "head.json").exists()
    sync_all(bound)
    server.open_round(cohort_target=6, min_cohort=5)
    rep = stranger.sync()
    assert rep.status == "bundle_mismatch" and rep.sent == [] and rep.round is None
    with server.coordinator.storage.read() as tx:
        rnd = tx.active_round()
        assert tx.get_message(rnd.round_id, stranger.device_id, "advertise") is None


def test_a_round_of_another_bundle_is_sat_out_even_after_an_unlabelled_head(server, device):
    """The round view is checked on its own: a head answer without identity (an older
    coordinator) is accepted, but the round says whose head it trains."""
    bound = [device(i) for i in range(5)]
    strip = Rewrite(server.transport, "/v1/head", _without_identity)
    stranger = device(9, (MODEL["id"], "2"), transport=strip)
    sync_all(bound + [stranger])
    assert stranger.head_version == 0, "an unlabelled head is accepted after the size check"
    server.open_round(cohort_target=6, min_cohort=5)
    rep = stranger.sync()
    assert rep.selected and rep.sent == [] and rep.status == "bundle_mismatch"
    assert "round 1 belongs to bundle" in rep.bundle_mismatch


def test_a_head_stored_without_identity_belongs_to_the_bound_bundle(server, device):
    """Backward compatibility: heads an older coordinator stored name no bundle; they
    belong to the bundle the database is bound to."""
    bias = np.linspace(-1, 1, NUM_ITEMS).astype(np.float32)
    _insert_head(server, 1, bias, {"version": 1, "epsilon": 0.0, "dp": True})
    client = device(0)
    head = client._call("GET", "/v1/head").json()
    assert (head["model_id"], head["model_version"]) == BOUND
    rep = client.sync()
    assert rep.status == "ok" and rep.head_updated and client.head_version == 1
    np.testing.assert_array_equal(client.model.target.global_bias, bias)
    assert device(1, (MODEL["id"], "2")).sync().status == "bundle_mismatch"


def test_an_older_coordinator_without_identity_is_still_followed(server, device):
    """Backward compatibility the other way: answers naming no bundle (an older
    coordinator) are used as before, and the device keeps the head as its own."""
    bias = np.full(NUM_ITEMS, 0.25, np.float32)
    _insert_head(server, 1, bias, {"version": 1})
    old = Rewrite(server.transport, "/v1/", _without_identity)
    client = device(0, transport=old)
    rep = client.sync()
    assert rep.status == "ok" and client.head_version == 1 and client.bundle_mismatch is None
    saved = json.loads((client.state_dir / "head.json").read_text())
    assert saved["bundle"] == {"model_id": BOUND[0], "model_version": BOUND[1]}


def test_the_saved_head_is_used_only_by_a_client_on_its_bundle(server, device, tmp_path):
    bias = np.full(NUM_ITEMS, 0.5, np.float32)
    _insert_head(server, 1, bias, {"version": 1})
    first = device(0)
    assert first.sync().head_updated and first.head_version == 1
    state = first.state_dir
    # the app updated its bundle and builds a new client on the same state folder
    updated = device(0, (MODEL["id"], "2"), state=state, enroll=False)
    assert updated.head_version is None and updated.global_bias is None
    assert updated.model.target.global_bias is None
    # back on the bundle the head belongs to: it is used again, without a download
    back = device(0, state=state, enroll=False)
    assert back.head_version == 1
    np.testing.assert_array_equal(back.model.target.global_bias, bias)


def test_the_database_stays_bound_to_its_bundle_version(server):
    for model in ({**MODEL, "version": "2"}, {**MODEL, "id": "other"}):
        storage = open_db(server.db)
        try:
            with pytest.raises(StorageError, match="new --db"):
                Coordinator(storage, model, EnrollKeys([ENROLL_KEY]), config=FAST)
        finally:
            storage.close()


# ---------------------------------------------------------------------- helpers
def _without_identity(body: Any) -> Any:
    """An answer as a coordinator from before heads named their bundle wrote it."""
    if isinstance(body, dict):
        for key in ("model_id", "model_version"):
            body.pop(key, None)
            if isinstance(body.get("metadata"), dict):
                body["metadata"].pop(key, None)
    return body


class Rewrite(httpx.BaseTransport):
    """Passes requests to the real app and rewrites the JSON answers of paths that
    start with ``prefix`` (what an older coordinator would have sent)."""

    def __init__(self, inner: Any, prefix: str, change: Callable[[Any], Any]) -> None:
        self.inner, self.prefix, self.change = inner, prefix, change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.startswith(self.prefix):
            return response
        body = json.loads(response.read() or b"null")
        return httpx.Response(
            response.status_code,
            headers={k: v for k, v in response.headers.items() if k != "content-length"},
            json=self.change(body),
        )
