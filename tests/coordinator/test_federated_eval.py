"""Federated evaluation in the coordinator (issue 16): a trained head waits as a
candidate, an evaluation round on the devices decides it, the decision is recorded in
the head's metadata, the round and ``/v1/status`` — on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgerec.coordinator.config import EvaluationConfig
from edgerec.coordinator.storage import Candidate
from edgerec.federated.accountant import compute_epsilon
from edgerec.federated.evaluation import FIELDS, report_bound
from edgerec.runtime.sync import SyncClient
from tests.coordinator.conftest import FAST, build_server, sync_all
from tests.coordinator.harness import ENROLL_KEY, NUM_ITEMS, TinyModel, make_store

EVAL = EvaluationConfig(max_events=3, alpha=0.05, min_events=10)


@pytest.fixture
def server(tmp_path: Path, clock, new_db):
    srv = build_server(tmp_path, clock, replace(FAST, evaluation=EVAL), db=new_db(tmp_path))
    yield srv
    srv.http.close()
    srv.transport.close()
    srv.coordinator.close()


def _status(server) -> dict:
    return server.http.get("/v1/status").json()


def _rounds(server) -> list:
    with server.coordinator.storage.read() as tx:
        return list(reversed(tx.list_rounds(limit=10)))


def test_a_trained_head_is_published_only_after_the_devices_evaluated_it(server, make_devices):
    devices = make_devices(12)
    sync_all(devices)  # head v0
    server.open_round(cohort_target=12, min_cohort=6, clip=0.5)
    assert all(r.finished and not r.error for r in sync_all(devices))
    train = _rounds(server)[-1]
    assert train.state == "done" and train.result_version is None
    assert train.params["training"]["holdout_events"] == EVAL.max_events
    status = _status(server)
    assert status["head_version"] == 0 and status["candidate"]["round"] == train.round_id
    assert status["federated_evaluation"] is True and status["last_evaluation"] is None
    # the round's release is accounted even though no head was published yet
    assert status["privacy"]["rounds"] == 1

    # the next round evaluates the candidate: a small report vector, bounded by its clip
    rnd = server.open_round(cohort_target=12, min_cohort=6, clip=0.5)
    params = rnd.params
    assert params["task"] == "evaluate" and params["evaluation"]["candidate"] == train.round_id
    assert params["secagg"]["vector_length"] == len(FIELDS)
    assert params["secagg"]["clip"] == pytest.approx(report_bound(EVAL.max_events))
    view = devices[0]._call("GET", "/v1/rounds/current").json()
    assert view["evaluation"]["max_events"] == EVAL.max_events
    cand = devices[0]._call("GET", f"/v1/candidates/{train.round_id}").json()
    assert cand["length"] == NUM_ITEMS and cand["state"] == "pending"
    assert all(r.finished and not r.error for r in sync_all(devices))

    done = _rounds(server)[-1]
    verdict = done.info["evaluation"]
    assert done.state == "done" and verdict["candidate_round"] == train.round_id
    # every device reported its last 3 events (no noise: the count is exact)
    assert verdict["events"] == pytest.approx(12 * EVAL.max_events)
    assert verdict["survivors"] == 12 and verdict["decision"] in ("publish", "block")
    assert verdict["z"] is not None and 0 <= verdict["p_worse"] <= 1
    status = _status(server)
    assert status["candidate"] is None and status["privacy"]["rounds"] == 2
    last = status["last_evaluation"]
    assert last["candidate_round"] == train.round_id and last["decision"] == verdict["decision"]
    with server.coordinator.storage.read() as tx:
        head = tx.latest_head()
        stored = tx.get_candidate(train.round_id)
    if verdict["decision"] == "publish":
        assert head.version == 1 == done.result_version and stored.state == "published"
        np.testing.assert_array_equal(head.global_bias, stored.global_bias)
        assert head.metadata["evaluation"]["evaluation_round"] == done.round_id
        assert head.metadata["dp_rounds"] == 2  # the evaluation is part of its (ε, δ)
        sync_all(devices)
        assert all(d.head_version == 1 for d in devices)
    else:
        assert head.version == 0 and stored.state == "rejected"
    # decided: the next round trains again
    assert "task" not in server.open_round(cohort_target=12, min_cohort=6).params


def _plant(server, round_id: int, bias: np.ndarray) -> None:
    """A pending candidate with ``bias``, as a training round would leave it."""
    with server.coordinator.storage.write() as tx:
        head = tx.latest_head()
        tx.insert_candidate(Candidate(round_id, head.version, 0.0, bias, {"sha256": None}))


def test_a_harmful_candidate_is_blocked_and_a_harmless_one_published(server, make_devices):
    """A candidate that buries every item the devices hold out (30 of the 40 here) puts
    each held-out target below ten other items: clearly worse, blocked. A candidate
    that changes nothing is not worse: published."""
    devices = make_devices(16)
    sync_all(devices)
    held_out = {
        e.item for d in devices for e in d.store.history("user-owner", limit=EVAL.max_events)
    }
    assert len(held_out) <= NUM_ITEMS - 10
    harmful = np.zeros(NUM_ITEMS, np.float32)
    harmful[devices[0].model.encode(sorted(held_out)) - 1] = -8.0
    _plant(server, 9999, harmful)
    server.open_round(cohort_target=16, min_cohort=8)
    sync_all(devices)
    verdict = _rounds(server)[-1].info["evaluation"]
    assert verdict["decision"] == "block" and verdict["ndcg_candidate"] == 0.0, verdict
    assert verdict["ndcg_diff"] < 0 and verdict["z"] < -1.645 and verdict["p_worse"] < 0.05
    metrics = server.http.get("/metrics").text
    assert 'edgerec_coordinator_last_evaluation{decision="block"} 1.0' in metrics
    assert "edgerec_coordinator_candidate_pending 0.0" in metrics
    assert f"edgerec_coordinator_last_evaluation_z {verdict['z']}" in metrics
    status = _status(server)
    assert status["head_version"] == 0 and status["last_evaluation"]["state"] == "rejected"

    _plant(server, 10_000, np.zeros(NUM_ITEMS, np.float32))
    server.open_round(cohort_target=16, min_cohort=8)
    sync_all(devices)
    verdict = _rounds(server)[-1].info["evaluation"]
    # the same scores as the current head: a difference of exactly 0 is "not worse"
    assert verdict["decision"] == "publish" and verdict["ndcg_diff"] == pytest.approx(0.0)
    assert _status(server)["head_version"] == 1


def test_dp_evaluation_rounds_are_noised_and_accounted(server, make_devices):
    devices = make_devices(10)
    sync_all(devices)
    _plant(server, 9999, np.zeros(NUM_ITEMS, np.float32))
    server.open_round(
        cohort_target=10, min_cohort=5, noise_multiplier=1.0, target_epsilon=50, delta=1e-5
    )
    sync_all(devices)
    done = _rounds(server)[-1]
    verdict = done.info["evaluation"]
    assert verdict["noise_std"] > 0 and verdict["noise_multiplier"] == 1.0
    # noise on the count: not exactly 10 devices x 3 events
    assert verdict["events"] != pytest.approx(30.0, abs=1e-6)
    eps = compute_epsilon(1.0, 1.0, 1, 1e-5)
    assert done.info["epsilon"] == pytest.approx(eps)
    assert _status(server)["privacy"]["epsilon"] == pytest.approx(eps)


def test_devices_keep_their_recent_events_out_of_training(server, make_devices, monkeypatch):
    import edgerec.runtime.sync_training as sync_mod

    seen = []
    real = sync_mod.LocalTrainer.train_global

    def spy(self, history, bias):
        seen.append(np.asarray(history).size)
        return real(self, history, bias)

    monkeypatch.setattr(sync_mod.LocalTrainer, "train_global", spy)
    devices = make_devices(6)
    sync_all(devices)
    server.open_round(cohort_target=6, min_cohort=3, training={"max_examples": 10})
    sync_all(devices)
    spec = devices[0].model.spec
    # 24 events stored; the last 3 are held out; the rest is capped at 10 + history_len
    assert seen and all(n == min(24 - 3, 10 + spec.history_len) for n in seen), seen


def test_a_candidate_for_another_head_is_rejected_not_evaluated(server, make_devices):
    devices = make_devices(6)
    sync_all(devices)
    with server.coordinator.storage.write() as tx:
        tx.insert_candidate(Candidate(77, 5, 0.0, np.zeros(NUM_ITEMS, np.float32), {}))
    rnd = server.open_round(cohort_target=6, min_cohort=3)
    assert "task" not in rnd.params  # a training round: the stale candidate is gone
    with server.coordinator.storage.read() as tx:
        assert tx.get_candidate(77).state == "rejected"
        assert tx.pending_candidate() is None


def test_an_evaluation_too_coarse_to_decide_rejects_the_candidate(tmp_path, clock, new_db):
    strict = replace(EVAL, max_se=1e-6)  # no real fleet measures this finely
    srv = build_server(tmp_path, clock, replace(FAST, evaluation=strict), db=new_db(tmp_path))
    devices = []
    for i in range(8):
        client = SyncClient(
            "http://coord", TinyModel(make_store(tmp_path / f"h{i}.db", i)), tmp_path / f"d{i}",
            enroll_key=ENROLL_KEY, transport=srv.transport, rng=np.random.default_rng(i),
            durable=False, min_noise_multiplier=0.0, min_cohort=2,
        )  # fmt: skip
        client.enroll()
        devices.append(client)
    try:
        sync_all(devices)
        rng = np.random.default_rng(0)
        _plant(srv, 5, rng.normal(0, 1, NUM_ITEMS).astype(np.float32))
        srv.open_round(cohort_target=8, min_cohort=4)
        sync_all(devices)
        verdict = _rounds(srv)[-1].info["evaluation"]
        assert verdict["decision"] == "inconclusive" and "too uncertain" in verdict["reason"]
        assert _status(srv)["head_version"] == 0
        assert _status(srv)["last_evaluation"]["state"] == "rejected"
    finally:
        for d in devices:
            d.store.close()
        srv.http.close()
        srv.transport.close()
        srv.coordinator.close()


def test_a_device_refuses_a_candidate_that_is_not_the_one_evaluated(
    server, make_devices, monkeypatch
):
    devices = make_devices(6)
    sync_all(devices)
    _plant(server, 9999, np.zeros(NUM_ITEMS, np.float32))
    real = server.coordinator.candidate

    def corrupted(round_id):
        out = real(round_id)
        return {**out, "global_bias": out["global_bias"][:-8] + "AAAAAAA="}

    monkeypatch.setattr(server.coordinator, "candidate", corrupted)
    server.open_round(cohort_target=6, min_cohort=3)
    reports = sync_all(devices)
    assert all(r.status == "bad_response" for r in reports), reports
    assert all("sha256 mismatch" in (r.error or "") for r in reports)
    evaluation_round = _rounds(server)[-1].round_id
    with server.coordinator.storage.read() as tx:
        assert tx.count_messages(evaluation_round, "upload") == 0
