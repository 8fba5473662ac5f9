"""Private and safe by default (issue 13, section 5): DP on by default, the server's ε
ceiling, the devices' floors, ``serve`` refusing plain HTTP off loopback, and the
per-device privacy ledger on both sides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgerec.cli import main
from edgerec.coordinator.config import (
    DEFAULT_EPSILON_CEILING,
    DEFAULT_NOISE_MULTIPLIER,
    RoundConfig,
    ServerConfig,
)
from edgerec.coordinator.server import ServeOptions, check_transport, is_loopback
from edgerec.errors import InputError
from edgerec.federated.accountant import compute_epsilon
from edgerec.runtime.sync import DEFAULT_MIN_COHORT, DEFAULT_MIN_NOISE_MULTIPLIER
from tests.coordinator.conftest import build_server, sync_all

#: the default privacy settings, without rate limits
DEFAULTS = ServerConfig(device_rate=1e6, device_burst=10**6, anon_rate=1e6, anon_burst=10**6)


@pytest.fixture
def safe_server(tmp_path: Path, clock, new_db):
    srv = build_server(tmp_path, clock, config=DEFAULTS, db=new_db(tmp_path))
    yield srv
    srv.http.close()
    srv.coordinator.close()


def url_of(db: Path | str) -> str:
    return f"sqlite:///{db}" if isinstance(db, Path) else db


def test_rounds_are_noised_by_default():
    assert RoundConfig(cohort_target=4, min_cohort=2).noise_multiplier == DEFAULT_NOISE_MULTIPLIER
    assert DEFAULT_NOISE_MULTIPLIER >= DEFAULT_MIN_NOISE_MULTIPLIER  # devices take part
    assert RoundConfig(cohort_target=4, min_cohort=2, noise_multiplier=0).noise_multiplier == 0


def test_admin_rounds_get_the_default_noise_and_the_ceiling_as_budget(safe_server):
    for _ in range(10):
        safe_server.enroll()
    body = {"cohort_target": 10, "min_cohort": 5}
    r = safe_server.http.post("/v1/admin/rounds", json=body, headers=safe_server.admin())
    assert r.status_code == 201, r.text
    assert r.json()["noise_multiplier"] == DEFAULT_NOISE_MULTIPLIER
    assert r.json()["target_epsilon"] == DEFAULT_EPSILON_CEILING


def test_no_request_can_raise_the_epsilon_ceiling(safe_server, capsys):
    for _ in range(10):
        safe_server.enroll()
    admin = safe_server.admin()
    body = {"cohort_target": 10, "min_cohort": 5, "target_epsilon": 50}
    r = safe_server.http.post("/v1/admin/rounds", json=body, headers=admin)
    assert r.status_code == 422 and r.json()["epsilon_ceiling"] == DEFAULT_EPSILON_CEILING
    assert "ceiling 8.0" in r.json()["detail"]
    # no noise means unbounded epsilon: above any ceiling
    body = {"cohort_target": 10, "min_cohort": 5, "noise_multiplier": 0}
    r = safe_server.http.post("/v1/admin/rounds", json=body, headers=admin)
    assert r.status_code == 409 and "epsilon ceiling is 8.0" in r.json()["detail"]
    assert safe_server.http.get("/v1/admin/rounds", headers=admin).json() == []
    # the CLI on the database obeys the same ceiling (exit 2: refused)
    code = main(
        ["-q", "coordinator", "open-round", "--db", url_of(safe_server.db),
         "--cohort-target", "10", "--min-cohort", "5", "--target-epsilon", "9"]
    )  # fmt: skip
    assert code == 2 and "ceiling" in capsys.readouterr().err


def test_the_ceiling_is_server_configuration():
    with pytest.raises(InputError, match="exceeds the epsilon ceiling 8.0"):
        ServerConfig(default_target_epsilon=10)
    with pytest.raises(InputError, match="epsilon_ceiling must be > 0"):
        ServerConfig(epsilon_ceiling=0)
    assert ServerConfig(epsilon_ceiling=20, default_target_epsilon=10).epsilon_ceiling == 20


def test_devices_refuse_rounds_below_their_default_floors(server, make_devices):
    strict = make_devices(6, min_noise_multiplier=DEFAULT_MIN_NOISE_MULTIPLIER, min_cohort=5)
    sync_all(strict)
    server.open_round(cohort_target=6, min_cohort=5, noise_multiplier=0.3)
    reports = sync_all(strict)
    assert all(r.status == "declined" and r.sent == [] and not r.error for r in reports)
    assert "noise multiplier 0.3 is below this device's floor 0.5" in reports[0].declined
    server.coordinator.rounds.abort_round(1)
    server.open_round(cohort_target=6, min_cohort=3, noise_multiplier=1.0)
    reports = sync_all(strict)
    assert all(r.status == "declined" for r in reports)
    assert "minimum cohort 3 is below this device's floor 5" in reports[0].declined


def test_default_floors(tmp_path):
    from edgerec.runtime.sync import SyncClient
    from tests.coordinator.harness import TinyModel

    client = SyncClient("http://x", TinyModel(), tmp_path / "s")
    assert client._rounds.min_noise_multiplier == DEFAULT_MIN_NOISE_MULTIPLIER == 0.5
    assert client._rounds.min_cohort == DEFAULT_MIN_COHORT == 5


# ---------------------------------------------------------------------- serve over TLS
@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.8.0.1", True),
     ("0.0.0.0", False), ("10.1.2.3", False), ("::", False), ("coord.example", False)],
)  # fmt: skip
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_serve_refuses_plain_http_off_loopback(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    code = main(["-q", "coordinator", "serve", "--db", db, "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert (
        code == 2 and "refusing to serve plain HTTP on 0.0.0.0" in err and "--insecure-http" in err
    )
    assert not (tmp_path / "c.db").exists()  # refused before anything was opened
    check_transport(ServeOptions(db=db, host="0.0.0.0", insecure_http=True))
    check_transport(ServeOptions(db=db, host="0.0.0.0", certfile="c", keyfile="k"))
    check_transport(ServeOptions(db=db, host="127.0.0.1"))


# ---------------------------------------------------------------------- privacy ledger
def test_each_device_has_a_privacy_ledger(server, make_devices, capsys):
    devices = make_devices(4)
    sync_all(devices)
    server.open_round(cohort_target=4, min_cohort=3, noise_multiplier=1.0, delta=1e-5)
    server.clock.advance(1)
    idle = make_devices(1, first=4)[0]  # enrolled after the round opened: not sampled
    reports = sync_all(devices)
    assert all(r.finished for r in reports), reports
    reports = [d.sync() for d in devices]  # each device sees the round published
    eps = compute_epsilon(1.0, 1.0, 1, 1e-5)
    for d, rep in zip(devices, reports, strict=True):
        assert rep.privacy_rounds == 1 and rep.privacy_epsilon == pytest.approx(eps), rep
        ledger = json.loads((d.state_dir / "privacy.json").read_text())
        assert ledger["rounds"]["1"]["state"] == "published"
        assert ledger["epsilon"] == pytest.approx(eps)
        assert ledger["epsilon_local"] == pytest.approx(eps)  # recomputed on the device
    assert idle.sync().privacy_epsilon == 0.0
    admin = server.admin()
    one = server.http.get(f"/v1/admin/devices/{devices[0].device_id}", headers=admin).json()
    assert one["privacy"]["epsilon"] == pytest.approx(eps) and one["privacy"]["round_ids"] == [1]
    listed = {d["device_id"]: d for d in server.http.get("/v1/admin/devices", headers=admin).json()}
    assert listed[idle.device_id]["privacy"]["rounds"] == 0
    assert main(["-q", "coordinator", "status", "--db", url_of(server.db), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["device_privacy"]["devices_with_spend"] == 4
    assert status["device_privacy"]["max_device_epsilon"] == pytest.approx(eps)
    assert main(["-q", "coordinator", "status", "--db", url_of(server.db), "--devices"]) == 0
    text = capsys.readouterr().out
    assert f"{devices[0].device_id}  active   epsilon={eps:.4g} over 1 rounds" in text
    assert f"{idle.device_id}  active   epsilon=0 over 0 rounds" in text


def test_a_device_that_missed_the_end_of_its_round_still_records_it(server, make_devices):
    from tests.coordinator.harness import Tap

    tap = Tap(server.transport, drop_after="/unmask")  # offline right after its last message
    devices = [make_devices(1, transport=tap)[0], *make_devices(2, first=1)]
    sync_all(devices)
    server.open_round(cohort_target=3, min_cohort=2, noise_multiplier=1.0, delta=1e-5)
    sync_all(devices)
    server.coordinator.rounds.advance()
    assert server.http.get("/v1/status").json()["round"]["state"] == "done"
    ledger = json.loads((devices[0].state_dir / "privacy.json").read_text())
    assert ledger["rounds"]["1"]["state"] == "uploaded"  # it never saw the round end
    server.open_round(cohort_target=3, min_cohort=2, noise_multiplier=1.0, delta=1e-5)
    tap.dropped, tap.drop_after = False, None  # back online
    rep = devices[0].sync()  # sees round 2 first, then asks how round 1 ended
    assert rep.round == 2 and rep.privacy_rounds == 1, rep
    assert rep.privacy_epsilon == pytest.approx(compute_epsilon(1.0, 1.0, 1, 1e-5))
