"""Full federated rounds in-process: aggregation, DP, dropouts, failures, restarts."""

from __future__ import annotations

import base64

import numpy as np
import pytest

import edgerec.runtime.sync_training as sync_mod
from edgerec.coordinator.config import RoundConfig
from edgerec.coordinator.errors import ApiError
from edgerec.coordinator.storage import Device
from edgerec.federated.accountant import compute_epsilon
from edgerec.federated.fixedpoint import to_signed
from edgerec.runtime.sync import SyncClient
from tests.coordinator.conftest import build_server, sync_all
from tests.coordinator.harness import ENROLL_KEY, NUM_ITEMS, Tap, TinyModel, db_snapshot


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Record each device's float update and its fixed-point encoding (before masking)."""
    seen: dict[str, dict] = {}
    real = sync_mod.privatize

    def spy(delta, params, rng=None):
        out = real(delta, params, rng)
        seen[params.round_id + f"/{len(seen)}"] = {
            "delta": np.asarray(delta, np.float64),
            "q": to_signed(out.values),
            "params": params,
        }
        return out

    monkeypatch.setattr(sync_mod, "privatize", spy)
    return seen


def _head(server) -> tuple[int, np.ndarray, dict]:
    r = server.http.get("/v1/status").json()
    with server.coordinator.storage.read() as tx:
        head = tx.latest_head()
    assert head.version == r["head_version"]
    return head.version, head.global_bias, head.metadata


def _expected(recorded: dict) -> np.ndarray:
    ups = list(recorded.values())
    p = ups[0]["params"]
    total = np.sum([u["q"] for u in ups], axis=0)
    return total / 2.0**p.frac_bits / p.cohort_target


def test_full_round_publishes_the_mean_of_clipped_updates(server, make_devices, recorded):
    devices = make_devices(10)
    sync_all(devices)  # head v0
    server.open_round(cohort_target=10, min_cohort=5, clip=0.5)
    reports = sync_all(devices)
    assert all(r.finished and not r.error for r in reports), reports
    version, bias, meta = _head(server)
    assert version == 1 and meta["survivors"] == 10 and meta["dropped"] == 0
    assert len(recorded) == 10
    # exactly the fixed-point sum / cohort_target (float32 storage)
    np.testing.assert_allclose(bias, _expected(recorded), atol=1e-6)
    # and the mean of the clipped float updates within fixed-point rounding
    p = next(iter(recorded.values()))["params"]
    clipped = []
    for u in recorded.values():
        d = u["delta"]
        n = np.linalg.norm(d)
        clipped.append(d * min(1.0, p.clip / n) if n else d)
    np.testing.assert_allclose(bias, np.mean(clipped, axis=0), atol=2.0**-p.frac_bits + 1e-6)
    assert np.abs(bias).max() > 1e-4  # something was learned
    # every device picked up the new head
    reports = [d.sync() for d in devices]
    assert all(d.head_version == 1 for d in devices)
    np.testing.assert_array_equal(devices[0].global_bias, bias)
    assert devices[0].model.target.global_bias is devices[0].global_bias
    # round secrets are gone from the devices once the round ended
    assert not list((devices[0].state_dir / "rounds").glob("*.json"))


def test_dp_round_adds_noise_and_records_epsilon(server, make_devices, recorded):
    devices = make_devices(10)
    sync_all(devices)
    server.open_round(
        cohort_target=10,
        min_cohort=5,
        clip=0.5,
        noise_multiplier=1.0,
        target_epsilon=50,
        delta=1e-5,
    )
    sync_all(devices)
    version, bias, meta = _head(server)
    assert version == 1
    np.testing.assert_allclose(bias, _expected(recorded), atol=1e-6)
    p = next(iter(recorded.values()))["params"]
    # noise is really there: the decoded sum is far from the clipped sum
    clipped = []
    for u in recorded.values():
        n = np.linalg.norm(u["delta"])
        clipped.append(u["delta"] * min(1.0, p.clip / n))
    assert np.abs(bias - np.sum(clipped, axis=0) / 10).max() > 0.05
    eps = compute_epsilon(1.0, 1.0, 1, 1e-5)
    assert meta["dp"] is True and meta["epsilon"] == pytest.approx(eps)
    status = server.http.get("/v1/status").json()
    assert status["privacy"]["epsilon"] == pytest.approx(eps)
    assert status["privacy"]["delta"] == 1e-5 and status["rounds_done"] == 1
    # q = 1: no cohort bound can be exceeded, so it adds nothing to delta
    assert meta["delta_sampling_cap"] == 0.0 and status["privacy"]["delta_total"] == 1e-5
    head = devices[0]._call("GET", "/v1/head").json()
    assert head["metadata"]["epsilon"] == pytest.approx(eps)


def test_privacy_budget_stops_new_rounds(server, make_devices):
    devices = make_devices(4)
    sync_all(devices)
    one = compute_epsilon(2.0, 1.0, 1, 1e-5)
    two = compute_epsilon(2.0, 1.0, 2, 1e-5)
    cfg = {"cohort_target": 4, "min_cohort": 3, "noise_multiplier": 2.0, "delta": 1e-5}
    with pytest.raises(ApiError) as err:
        server.open_round(**cfg, target_epsilon=one * 0.9)
    assert err.value.code == "privacy_budget_exhausted"
    target = (one + two) / 2  # one round fits, two do not
    server.open_round(**cfg, target_epsilon=target)
    sync_all(devices)
    assert _head(server)[0] == 1
    before = db_snapshot(server.db)
    r = server.http.post(
        "/v1/admin/rounds", json={**cfg, "target_epsilon": target}, headers=server.admin()
    )
    assert r.status_code == 409 and r.json()["error"] == "privacy_budget_exhausted"
    assert r.json()["epsilon"] == pytest.approx(one)
    assert db_snapshot(server.db) == before
    # no noise and a target: refused too (z = 0 gives no DP at all)
    with pytest.raises(ApiError):
        server.open_round(cohort_target=4, min_cohort=3, target_epsilon=100)


@pytest.mark.parametrize("when", ["masked", "shares"])
def test_30_percent_dropout_still_completes(server, make_devices, recorded, clock, when):
    taps = [Tap(server.transport, drop_after=f"/{when}" if i < 3 else None) for i in range(10)]
    devices = [make_devices(1, first=i, transport=taps[i])[0] for i in range(10)]
    sync_all(devices)
    server.open_round(cohort_target=10, min_cohort=5, clip=0.5, phase_timeout_s=30)
    reports = sync_all(devices)
    assert all(t.dropped for t in taps[:3])
    state = server.coordinator.rounds.advance()
    assert state is not None  # waiting for the dropped devices until the deadline
    clock.advance(700)  # past the upload deadline and the unmask timeout
    server.coordinator.rounds.advance()
    reports = sync_all(devices[3:])
    clock.advance(700)
    server.coordinator.rounds.advance()
    version, bias, meta = _head(server)
    assert version == 1, server.http.get("/v1/status").json()
    survivors = 10 if when == "masked" else 7
    assert meta["survivors"] == survivors and meta["dropped"] == 10 - survivors
    assert len(recorded) == survivors
    np.testing.assert_allclose(bias, _expected(recorded), atol=1e-6)
    assert all(not r.error for r in reports)


def test_min_cohort_missed_fails_cleanly(server, make_devices, clock):
    devices = make_devices(4)
    for _ in range(6):
        server.enroll()  # enrolled, but never show up
    sync_all(devices)
    rnd = server.open_round(cohort_target=10, min_cohort=6, phase_timeout_s=10)
    sync_all(devices)
    clock.advance(11)
    server.coordinator.rounds.advance()
    status = server.http.get("/v1/status").json()
    assert status["round"]["state"] == "failed"
    assert "only 4 devices advertised" in status["round"]["failure"]
    assert status["head_version"] == 0 and status["rounds_failed"] == 1
    assert status["privacy"]["rounds"] == 0
    reports = [d.sync() for d in devices]
    assert all(r.round == rnd.round_id and r.round_state == "failed" for r in reports)
    assert all(d.head_version == 0 for d in devices)


def test_too_many_dropouts_to_unmask_fails_cleanly(server, make_devices, clock):
    taps = [Tap(server.transport, drop_after="/masked" if i < 5 else None) for i in range(10)]
    devices = [make_devices(1, first=i, transport=taps[i])[0] for i in range(10)]
    sync_all(devices)
    server.open_round(cohort_target=10, min_cohort=5, phase_timeout_s=30)
    sync_all(devices)
    clock.advance(31)
    server.coordinator.rounds.advance()
    status = server.http.get("/v1/status").json()
    assert status["round"]["state"] == "failed", status
    assert "cannot unmask" in status["round"]["failure"]
    assert status["head_version"] == 0


def test_masks_inconsistent_with_advertised_keys_are_detected(server, make_devices):
    def tamper(path: str, body: dict) -> dict:
        if path.endswith("/masked"):
            y = np.frombuffer(base64.b64decode(body["data"]), "<u4").astype(np.uint32)
            y += (
                np.random.default_rng(1)
                .integers(0, 2**32, y.size, dtype=np.uint64)
                .astype(np.uint32)
            )  # a mask the advertised keys do not explain
            body["data"] = base64.b64encode(y.astype("<u4").tobytes()).decode()
        return body

    taps = [Tap(server.transport, tamper=tamper if i == 4 else None) for i in range(10)]
    devices = [make_devices(1, first=i, transport=taps[i])[0] for i in range(10)]
    sync_all(devices)
    server.open_round(cohort_target=10, min_cohort=5)
    sync_all(devices)
    status = server.http.get("/v1/status").json()
    assert status["round"]["state"] == "failed"
    assert "inconsistent with its advertised keys" in status["round"]["failure"]
    assert status["head_version"] == 0  # nothing released


def test_tampered_share_is_detected_by_the_receivers(server, make_devices, clock):
    def tamper(path: str, body: dict) -> dict:
        if path.endswith("/shares"):
            for k, ct in body["ciphertexts"].items():
                raw = bytearray(base64.b64decode(ct))
                raw[-1] ^= 1
                body["ciphertexts"][k] = base64.b64encode(bytes(raw)).decode()
        return body

    taps = [Tap(server.transport, tamper=tamper if i == 0 else None) for i in range(6)]
    devices = [make_devices(1, first=i, transport=taps[i])[0] for i in range(6)]
    sync_all(devices)
    server.open_round(cohort_target=6, min_cohort=3, phase_timeout_s=20)
    reports = sync_all(devices)
    errors = [r.error or "" for r in reports[1:]]
    assert all("DecryptionError" in e and "failed AES-GCM" in e for e in errors), errors
    clock.advance(700)
    server.coordinator.rounds.advance()
    status = server.http.get("/v1/status").json()
    assert status["round"]["state"] == "failed" and status["head_version"] == 0


def test_coordinator_restart_mid_round_loses_nothing(
    tmp_path, clock, make_devices, recorded, new_db
):
    db = new_db(tmp_path / "srv")
    first = build_server(tmp_path / "srv", clock, db=db)
    taps = [Tap(first.transport) for _ in range(8)]
    devices = [make_devices(1, first=i, transport=taps[i])[0] for i in range(8)]
    sync_all(devices)
    first.open_round(cohort_target=8, min_cohort=4)
    # everyone advertises and shares; some upload before the "crash"
    for _ in range(2):
        for d in devices:
            d.sync()
    for d in devices[:4]:
        d.sync()
    before = db_snapshot(first.db)
    uploads = sum(1 for m in before["messages"] if m[2] == "upload")
    assert 4 <= uploads < 8
    first.http.close()
    first.transport.close()
    first.coordinator.storage.close()  # the process is gone; only the database remains

    second = build_server(tmp_path / "srv", clock, db=db)
    assert db_snapshot(second.db) == before
    for t in taps:
        t.inner = second.transport
    reports = sync_all(devices)
    assert all(r.finished and not r.error for r in reports), reports
    version, bias, meta = _head(second)
    assert version == 1 and meta["survivors"] == 8
    np.testing.assert_allclose(bias, _expected(recorded), atol=1e-6)
    second.coordinator.rounds.advance()
    assert _head(second)[0] == 1  # not applied twice


def test_device_app_restart_resumes_the_round(server, make_devices, tmp_path):
    devices = make_devices(5)
    sync_all(devices)
    server.open_round(cohort_target=5, min_cohort=3)
    for d in devices:
        d.sync()  # advertise (+ share for the last ones)
    # device 0 is killed and restarted: a new client object on the same state dir
    old = devices[0]
    fresh = SyncClient(
        "http://coord",
        TinyModel(old.store),
        old.state_dir,
        transport=server.transport,
        rng=np.random.default_rng(9),
    )
    assert fresh.device_id == old.device_id and fresh.head_version == 0
    devices[0] = fresh
    reports = sync_all(devices)
    assert all(r.finished and not r.error for r in reports), reports
    assert _head(server)[0] == 1


def test_sync_is_safe_with_no_round_and_when_not_selected(server, make_devices, tmp_path):
    devices = make_devices(3)
    r = devices[0].sync()
    assert r.error is None and r.round is None and r.head_version == 0
    late = SyncClient(
        "http://coord",
        TinyModel(),
        tmp_path / "late",
        enroll_key=ENROLL_KEY,
        transport=server.transport,
    )
    server.open_round(cohort_target=3, min_cohort=2)
    server.clock.advance(1)
    r = late.sync()  # enrolled after the round opened: not in its sample
    assert r.error is None and r.selected is False and r.sent == []
    assert late.global_bias.shape == (NUM_ITEMS,)


def test_round_config_validation():
    with pytest.raises(ValueError):
        RoundConfig(cohort_target=1, min_cohort=1)
    with pytest.raises(ValueError):
        RoundConfig(cohort_target=5, min_cohort=6)
    with pytest.raises(ValueError):
        RoundConfig(cohort_target=5, min_cohort=2, neighbour_degree=3)
    with pytest.raises(ValueError):
        RoundConfig.from_json({"cohort_target": 5, "min_cohort": 2, "bogus": 1})


def test_sampling_rate_selects_a_fraction(server, make_devices):
    for _ in range(40):
        server.enroll()
    rnd = server.open_round(cohort_target=10, min_cohort=2)
    assert rnd.params["sampling_rate"] == pytest.approx(10 / 40)
    devices = [Device(f"d-{i:024x}", b"", rnd.opened_at - 1) for i in range(2000)]
    picked = sum(server.coordinator.rounds.is_selected(rnd, d) for d in devices)
    assert 400 < picked < 600  # ~ q * 2000 = 500


def test_cohort_bound_is_a_high_quantile_and_is_never_truncated(server, make_devices):
    from edgerec.federated.sampling import binomial_tail, lower_tail, min_cohort_for

    for _ in range(40):
        server.enroll()
    rounds = server.coordinator.rounds
    rnd = server.open_round(cohort_target=10, min_cohort=2)
    bound = rnd.params["max_cohort"]
    # a Poisson sample of q = 1/4 over 40 (41 with a neighbour) exceeds it w.p. <= 1e-12
    assert 10 < bound <= 40 and rnd.params["secagg"]["cohort_target"] == bound
    assert binomial_tail(41, 0.25, bound) <= 1e-12 < binomial_tail(41, 0.25, bound - 1)
    # the round's tail also counts samples under min_cohort (2 of 39 devices)
    assert rnd.params["cap_tail"] == pytest.approx(
        binomial_tail(41, 0.25, bound) + lower_tail(39, 0.25, 2)
    )
    with server.coordinator.storage.read() as tx:
        enrolled = [tx.get_device(i) for i in tx.device_ids_enrolled_by(rnd.opened_at)]
    assert rnd.params["selected"] == sum(rounds.is_selected(rnd, d) for d in enrolled)
    rounds.abort_round(rnd.round_id)
    # a bound near the mean: a round that sampled more devices than it fails at once
    # (the sample is never cut down to the bound), one that sampled too few as well
    seen = set()
    for _ in range(60):
        rnd = server.open_round(cohort_target=10, min_cohort=9, cohort_tail=0.45)
        selected, bound = rnd.params["selected"], rnd.params["max_cohort"]
        if selected > bound:
            assert rnd.state == "failed" and "more than the cohort bound" in rnd.failure
            seen.add("over")
        elif selected < 9:
            assert rnd.state == "failed" and "fewer than min_cohort" in rnd.failure
            seen.add("under")
        else:
            assert rnd.state == "advertise"
            rounds.abort_round(rnd.round_id)
            seen.add("ok")
        if len(seen) == 3:
            break
    assert seen == {"over", "under", "ok"}
    status = server.http.get("/v1/status").json()
    assert status["head_version"] == 0 and status["privacy"]["rounds"] == 0
    # with DP, a min_cohort whose lower tail would cost more than delta / 100 is refused
    with pytest.raises(ApiError, match="min_cohort") as err:
        server.open_round(
            cohort_target=10, min_cohort=9, noise_multiplier=1.0, target_epsilon=8, delta=1e-5
        )
    assert f"min_cohort <= {min_cohort_for(40, 0.25)}" in err.value.detail


def test_status_and_head_endpoints(server, make_devices):
    (device,) = make_devices(1)
    r = server.http.get("/v1/status")
    assert r.status_code == 200
    s = r.json()
    assert s["head_version"] == 0 and s["model"]["vector_length"] == NUM_ITEMS
    token = device.token
    r = server.http.get("/v1/head", headers={"authorization": f"Bearer {token}"})
    body = r.json()
    raw = base64.b64decode(body["global_bias"])
    assert len(raw) == 4 * NUM_ITEMS and body["changed"] is True
    r = server.http.get("/v1/head?since=0", headers={"authorization": f"Bearer {token}"})
    assert r.json()["changed"] is False and "global_bias" not in r.json()


def test_auto_rounds_stop_when_the_budget_is_spent(server, make_devices, caplog):
    devices = make_devices(4)
    sync_all(devices)
    one = compute_epsilon(2.0, 1.0, 1, 1e-5)
    two = compute_epsilon(2.0, 1.0, 2, 1e-5)
    cfg = RoundConfig(
        cohort_target=4, min_cohort=3, noise_multiplier=2.0, delta=1e-5,
        target_epsilon=(one + two) / 2,
    )  # fmt: skip
    engine = server.coordinator.rounds
    first = engine.auto_open(cfg)
    assert first is not None and engine.auto_open(cfg) is None  # one at a time
    sync_all(devices)
    assert _head(server)[0] == 1
    assert engine.auto_open(cfg, interval_s=60) is None  # waits after the last round
    server.clock.advance(61)
    assert engine.auto_open(cfg, interval_s=60) is None
    assert "no more rounds: privacy budget exhausted" in caplog.text
    assert engine._auto_stopped


def test_devices_sit_out_rounds_below_their_privacy_floor(server, make_devices):
    strict = make_devices(3, min_noise_multiplier=0.5)
    sync_all(strict)
    server.open_round(cohort_target=3, min_cohort=2, noise_multiplier=0.1)
    reports = sync_all(strict)
    assert all(r.finished and r.sent == [] and not r.error for r in reports)
    assert server.http.get("/v1/status").json()["round"]["messages"]["advertise"] == 0


def test_a_wrong_unmask_share_is_outvoted_and_its_sender_named(server, make_devices, recorded):
    def tamper(path: str, body: dict) -> dict:
        if path.endswith("/unmask"):
            owner = next(iter(body["b_shares"]))
            y = int.from_bytes(base64.b64decode(body["b_shares"][owner]), "big")
            body["b_shares"][owner] = base64.b64encode(
                ((y + 1) % (2**521 - 1)).to_bytes(66, "big")
            ).decode()
        return body

    taps = [Tap(server.transport, tamper=tamper if i == 2 else None) for i in range(6)]
    devices = [make_devices(1, first=i, transport=taps[i])[0] for i in range(6)]
    sync_all(devices)
    server.open_round(cohort_target=6, min_cohort=3)
    reports = sync_all(devices)
    version, bias, _ = _head(server)
    assert version == 1, reports  # the honest majority of shares still reconstructs
    np.testing.assert_allclose(bias, _expected(recorded), atol=1e-6)
    summary = server.http.get("/v1/admin/rounds", headers=server.admin()).json()[0]
    cid = server.coordinator.rounds.device_view(
        server.coordinator.devices.authenticate(f"Bearer {devices[2].token}"), 1
    )["client_id"]
    assert str(cid) in summary["misbehaving"], (summary, reports, taps[2].sent[-3:])
