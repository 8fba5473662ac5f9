"""Federated heads follow the bundle version across an over-the-air update (issue 13 §3).

Real parts only: converter-made bundles v1 and v2 (the tiny bundle under two model
versions), a TUF release repository served over HTTP on 127.0.0.1, the device's
:class:`BundleUpdater`, the real coordinator app in-process
(``edgerec.simulation.asgi.asgi_transport``), one per bundle version, each bound to its
bundle with ``model_from_bundle``, and :class:`SyncClient` on a real Recommender.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgerec.coordinator.app import create_app
from edgerec.coordinator.config import RoundConfig, ServerConfig
from edgerec.coordinator.security import EnrollKeys
from edgerec.coordinator.service import Coordinator, model_from_bundle
from edgerec.coordinator.sqlite import SqliteStorage
from edgerec.coordinator.storage import Head
from edgerec.release import ReleaseRepository
from edgerec.runtime.sync import SyncClient
from edgerec.runtime.update import BundleUpdater
from edgerec.simulation.asgi import asgi_transport

from .ota_server import bundle_variant, serve

pytest.importorskip("tuf")
pytest.importorskip("fastapi")

KEY = "heads-enroll-key-0123456789"
CONFIG = ServerConfig(
    device_rate=1e6, device_burst=10**6, anon_rate=1e6, anon_burst=10**6, epsilon_ceiling=None
)


class Coord:
    """A coordinator bound to one bundle, in-process, with a head of value ``fill``."""

    def __init__(self, db: Path, bundle: Path, fill: float, label_head: bool) -> None:
        self.co = Coordinator(
            SqliteStorage(db, synchronous="normal"),
            model_from_bundle(bundle),
            EnrollKeys([KEY]),
            config=CONFIG,
        )
        self.app = create_app(self.co, ticker=False)
        n = int(self.co.model["vector_length"])
        self.bias = np.full(n, fill, np.float32)
        meta: dict[str, Any] = {
            "version": 1,
            "sha256": hashlib.sha256(self.bias.tobytes()).hexdigest(),
        }
        if label_head:  # else: as a coordinator from before heads named their bundle
            meta.update(model_id=self.co.model["id"], model_version=self.co.model["version"])
        with self.co.storage.write() as tx:
            tx.insert_head(Head(1, None, self.co.clock(), self.bias, meta))

    def client(self, rec: Any, state: Path, updater: BundleUpdater) -> SyncClient:
        """A device on ``rec`` (its own transport: closing the client closes it)."""
        return SyncClient(
            "http://coord",
            rec,
            state,
            enroll_key=KEY,
            transport=asgi_transport(self.app),
            durable=False,
            updater=updater,
            min_noise_multiplier=0.0,
            min_cohort=2,
        )

    def close(self) -> None:
        self.co.close()


@contextmanager
def coordinators(tmp: Path, v1: Path, v2: Path) -> Iterator[tuple[Coord, Coord]]:
    # v1's coordinator holds a head stored without identity (an older database): it
    # belongs to the bundle the database is bound to
    a = Coord(tmp / "coord-v1.db", v1, 0.5, label_head=False)
    b = Coord(tmp / "coord-v2.db", v2, -1.0, label_head=True)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def setup(tiny_bundle: Path, tmp_path: Path):
    v1 = bundle_variant(tiny_bundle, tmp_path / "b1", "v1")
    v2 = bundle_variant(tiny_bundle, tmp_path / "b2", "v2")
    repo = ReleaseRepository.init(tmp_path / "repo", tmp_path / "keys")
    repo.publish(v1)
    with serve(repo.root) as server, coordinators(tmp_path, v1, v2) as (a, b):
        updater = BundleUpdater(
            server.url, tmp_path / "ota", "dev-1", repo.metadata_dir / "root.json"
        )
        yield updater, repo, v2, a, b


def test_after_an_update_the_client_uses_the_head_of_its_new_version(setup, tmp_path):
    up, repo, v2_bundle, coord_v1, coord_v2 = setup
    assert up.update().version == "v1"
    state = tmp_path / "sync"

    # on v1, with v1's coordinator: its (unlabelled) head is applied and kept for v1
    rec = up.open_recommender()
    client = coord_v1.client(rec, state, up)
    rep = client.sync()
    assert rep.status == "ok" and rep.head_updated and client.head_version == 1
    np.testing.assert_array_equal(rec._global_bias, coord_v1.bias)
    assert up.load_head("v1")[0] == 1

    # v2 is released: sync() installs it; this client still runs v1, so nothing changes
    repo.publish(v2_bundle)
    rep = client.sync()
    assert (client.last_update.status, client.last_update.version) == ("installed", "v2")
    assert client.head_version == 1 and up.load_head("v2") == (None, None)
    client.close()
    rec.close()

    # the app reopens the new bundle: the client does not start from v1's head ...
    rec = up.open_recommender()
    assert rec.manifest.model_version == "v2" and rec.head_version is None
    client = coord_v1.client(rec, state, up)
    assert client.head_version is None and client.global_bias is None
    # ... and v1's coordinator serves another bundle: its head is ignored, rounds sat out
    rep = client.sync()
    assert rep.status == "bundle_mismatch" and "v1" in rep.bundle_mismatch
    assert rec.head_version is None and client.head_version is None
    _second_device(coord_v1)
    coord_v1.co.rounds.open_round(
        RoundConfig(cohort_target=2, min_cohort=2, deadline_s=600, noise_multiplier=0.0)
    )
    rep = client.sync()
    assert rep.status == "bundle_mismatch" and rep.sent == []
    client.close()

    # v2's coordinator: its head is applied and kept for v2
    client_b = coord_v2.client(rec, tmp_path / "sync-v2", up)
    rep = client_b.sync()
    assert rep.status == "ok" and rep.head_updated and rec.head_version == 1
    np.testing.assert_array_equal(rec._global_bias, coord_v2.bias)
    assert up.load_head("v2")[0] == 1
    client_b.close()

    # a client built on v2 over the old state folder starts from v2's head (the
    # updater's), never from the v1 head that folder still holds
    client = coord_v1.client(rec, state, up)
    assert client.head_version == 1
    np.testing.assert_array_equal(client.global_bias, coord_v2.bias)
    client.close()
    rec.close()

    # rolled back to v1: v1's head again, not v2's
    assert up.rollback() == "v1"
    rec = up.open_recommender()
    client = coord_v2.client(rec, tmp_path / "sync-v2", up)
    np.testing.assert_array_equal(client.global_bias, coord_v1.bias)
    rep = client.sync()
    assert rep.status == "bundle_mismatch" and "v2" in rep.bundle_mismatch
    np.testing.assert_array_equal(rec._global_bias, coord_v1.bias)
    client.close()
    rec.close()


def _second_device(coord: Coord) -> None:
    """Enroll one more device, so that the coordinator can open a round of two."""
    import httpx

    with httpx.Client(transport=asgi_transport(coord.app), base_url="http://coord") as http:
        assert http.post("/v1/enroll", json={"enroll_key": KEY}).status_code == 201
