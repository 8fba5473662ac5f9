"""A real ``edgerec coordinator serve`` process: kill -9 mid-round, restart, TLS.

The kill -9 and second-server tests run on SQLite and on PostgreSQL (``new_db``).

Slow: each server start imports FastAPI and uvicorn in a fresh interpreter.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import edgerec.runtime.sync_training as sync_mod
from edgerec.federated.fixedpoint import to_signed
from edgerec.runtime.sync import SyncClient
from tests.coordinator.conftest import sync_all
from tests.coordinator.harness import (
    ADMIN_TOKEN,
    ENROLL_KEY,
    TinyModel,
    db_snapshot,
    make_bundle,
    make_store,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m edgerec coordinator serve`` in a subprocess."""

    def __init__(
        self,
        tmp: Path,
        db: str,
        tls: tuple[Path, Path] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.tmp = tmp
        self.db = db
        self.tls = tls
        self.extra = extra
        self.port = free_port()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.bundle = tmp / "bundle"
        if not self.bundle.exists():
            make_bundle(self.bundle)
        (tmp / "enroll.key").write_text(ENROLL_KEY + "\n")
        (tmp / "admin.token").write_text(ADMIN_TOKEN + "\n")
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "server.log"

    def start(self) -> ServerProcess:
        cmd = [
            sys.executable, "-m", "edgerec", "coordinator", "serve",
            "--bundle", str(self.bundle), "--db", self.db, "--port", str(self.port),
            "--enroll-key-file", str(self.tmp / "enroll.key"),
            "--admin-token-file", str(self.tmp / "admin.token"),
            "--tick", "0.2", "--device-rate", "1000", "--device-burst", "1000",
            "--anon-rate", "1000", "--anon-burst", "1000",
            # these tests are about processes, crashes and TLS, with small, lightly
            # noised rounds; the privacy defaults have their own tests
            "--epsilon-ceiling", "100",
        ]  # fmt: skip
        cmd += list(self.extra)
        if self.tls:
            cmd += ["--certfile", str(self.tls[0]), "--keyfile", str(self.tls[1])]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=self.tmp)
        verify = ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v1/status", verify=verify, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edgerec", "-q", "coordinator", *argv],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def devices_for(url: str, tmp: Path, n: int, **kw) -> list[SyncClient]:
    kw.setdefault("min_noise_multiplier", 0.0)  # small, lightly noised test rounds
    kw.setdefault("min_cohort", 2)
    out = []
    for i in range(n):
        store = make_store(tmp / f"history-{i}.db", i)
        client = SyncClient(
            url, TinyModel(store), tmp / f"device-{i}", enroll_key=ENROLL_KEY,
            rng=np.random.default_rng(i), **kw,
        )  # fmt: skip
        out.append(client)
    return out


def sync_until_finished(devices: list[SyncClient], timeout: float = 60.0) -> list:
    """Devices call sync() the way an app would, until all are finished with the round."""
    deadline = time.monotonic() + timeout
    while True:
        reports = sync_all(devices)
        if all(r.finished for r in reports) or time.monotonic() > deadline:
            return reports
        time.sleep(0.3)


def wait_state(url: str, state: str, timeout: float = 30.0) -> None:
    """Poll /v1/status until the round is in ``state`` (phases close in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url + "/v1/status").json()["round"]["state"] == state:
            return
        time.sleep(0.1)
    raise AssertionError(f"round never reached {state}")


def upload_count(db: Path | str) -> int:
    rows = db_snapshot(db, (("messages", "round_id, device_id, phase"),))["messages"]
    return sum(1 for r in rows if r[2] == "upload")


def stored_heads(db: Path | str) -> dict[int, np.ndarray]:
    rows = db_snapshot(db, (("heads", "version"),))["heads"]
    return {r[0]: np.frombuffer(bytes(r[3]), "<f4") for r in rows}


def url_of(db: Path | str) -> str:
    return f"sqlite:///{db}" if isinstance(db, Path) else db


def test_kill_9_mid_round_loses_no_upload_and_applies_once(tmp_path, monkeypatch, new_db):
    seen: list[np.ndarray] = []
    real = sync_mod.privatize

    def spy(delta, params, rng=None):
        out = real(delta, params, rng)
        seen.append(to_signed(out.values))
        return out

    monkeypatch.setattr(sync_mod, "privatize", spy)
    db_file = new_db(tmp_path)
    server = ServerProcess(tmp_path, url_of(db_file)).start()
    devices = devices_for(server.url, tmp_path, 6)
    try:
        assert all(r.error is None for r in sync_all(devices))  # enroll + head v0
        r = cli("open-round", "--url", server.url, "--admin-token-file",
                str(tmp_path / "admin.token"), "--cohort-target", "6", "--min-cohort", "4",
                "--clip", "0.5", "--noise-multiplier", "0.3", "--json")  # fmt: skip
        assert r.returncode == 0, r.stderr
        for state in ("share", "upload"):  # everyone advertises, then sends shares
            for d in devices:
                d.sync()
            wait_state(server.url, state)
        for d in devices[:3]:
            assert "upload" in d.sync().sent
        accepted = upload_count(db_file)
        assert 3 <= accepted < 6
        server.kill9()
        assert upload_count(db_file) == accepted  # every acknowledged upload is on disk

        # the devices keep trying while the coordinator is down: errors, no harm
        down = [d.sync() for d in devices]
        assert all(rep.error and "network" in rep.error for rep in down)

        server.start()
        reports = sync_until_finished(devices)
        assert all(rep.finished and not rep.error for rep in reports), reports
        status = httpx.get(server.url + "/v1/status").json()
        assert status["head_version"] == 1 and status["rounds_done"] == 1
        assert status["round"]["messages"]["upload"] == 6
        bias = stored_heads(db_file)[1]
        frac = 2.0 ** devices[0]._read_json("head.json")["metadata"]["frac_bits"]
        assert len(seen) == 6
        np.testing.assert_allclose(bias, np.sum(seen, axis=0) / frac / 6, atol=1e-6)

        # another crash after publishing: the round is not applied twice
        server.kill9()
        server.start()
        time.sleep(0.5)
        status = httpx.get(server.url + "/v1/status").json()
        assert status["head_version"] == 1 and status["rounds_done"] == 1
        assert len(stored_heads(db_file)) == 2
        assert all(d.sync().head_version == 1 for d in devices)
    finally:
        server.stop()
        for d in devices:
            d.close()
            d.store.close()


def test_second_server_on_the_same_database_is_refused(tmp_path, new_db):
    db = url_of(new_db(tmp_path))
    server = ServerProcess(tmp_path, db).start()
    try:
        metrics = httpx.get(server.url + "/metrics")
        assert metrics.status_code == 200 and "edgerec_coordinator_round_phase" in metrics.text
        second = cli("serve", "--bundle", str(server.bundle), "--db", db,
                     "--port", str(free_port()))  # fmt: skip
        assert second.returncode == 2 and "another coordinator" in second.stderr
    finally:
        server.stop()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("http", ["httpx", "urllib"])
def test_tls_round_trip(tmp_path, http):
    cert, key = _self_signed(tmp_path)
    server = ServerProcess(tmp_path, f"sqlite:///{tmp_path}/c.db", tls=(cert, key)).start()
    devices = devices_for(server.url, tmp_path, 3, verify=str(cert), http=http)
    try:
        r = cli("open-round", "--url", server.url, "--cafile", str(cert),
                "--admin-token-file", str(tmp_path / "admin.token"),
                "--cohort-target", "3", "--min-cohort", "2")  # fmt: skip
        assert r.returncode == 2 and "only 0 devices" in r.stderr  # nobody enrolled yet
        assert all(rep.error is None for rep in sync_all(devices))
        r = cli("open-round", "--url", server.url, "--cafile", str(cert),
                "--admin-token-file", str(tmp_path / "admin.token"),
                "--cohort-target", "3", "--min-cohort", "2")  # fmt: skip
        assert r.returncode == 0, r.stderr
        reports = sync_until_finished(devices)
        assert all(rep.finished and not rep.error for rep in reports), reports
        assert all(d.sync().head_version == 1 for d in devices)
        # plain HTTP to the TLS port and an unverified certificate both fail
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url + "/v1/status", timeout=5)
        status = cli("status", "--url", server.url, "--cafile", str(cert), "--json")
        assert status.returncode == 0 and '"head_version": 1' in status.stdout
        # the fleet commands over the admin API
        admin = ["--url", server.url, "--cafile", str(cert),
                 "--admin-token-file", str(tmp_path / "admin.token")]  # fmt: skip
        ledger = cli("status", *admin, "--devices")
        assert ledger.returncode == 0 and f"{devices[0].device_id}  active" in ledger.stdout
        key = cli("enroll-key", "add", *admin, "--quota", "1", "--json")
        assert key.returncode == 0 and '"quota": 1' in key.stdout
        assert cli("revoke-device", *admin, devices[0].device_id).returncode == 0
        assert devices[0].sync().status == "revoked"
    finally:
        server.stop()
        for d in devices:
            d.close()
            d.store.close()


def test_serve_with_federated_evaluation_decides_candidates(tmp_path):
    """``serve --federated-eval`` with its flags: a training round leaves a candidate,
    the next round evaluates it; three noised reports cannot meet ``--eval-max-se``, so
    the evaluation is inconclusive and nothing is published."""
    flags = ("--federated-eval", "--eval-events", "2", "--eval-min-events", "2",
             "--eval-max-se", "1e-9")  # fmt: skip
    server = ServerProcess(tmp_path, f"sqlite:///{tmp_path}/c.db", extra=flags).start()
    devices = devices_for(server.url, tmp_path, 3)
    admin = ["--url", server.url, "--admin-token-file", str(tmp_path / "admin.token")]
    try:
        sync_all(devices)
        for _ in range(2):  # a training round, then the evaluation of its candidate
            r = cli("open-round", *admin, "--cohort-target", "3", "--min-cohort", "2")
            assert r.returncode == 0, r.stderr
            reports = sync_until_finished(devices)
            assert all(rep.finished and not rep.error for rep in reports), reports
            wait_state(server.url, "done")
        status = httpx.get(server.url + "/v1/status").json()
        assert status["federated_evaluation"] is True and status["candidate"] is None
        last = status["last_evaluation"]
        # three noised reports: too few events, or too uncertain for --eval-max-se
        assert last["decision"] == "inconclusive", last
        assert last["state"] == "rejected" and status["head_version"] == 0
        assert last["survivors"] == 3 and last["noise_std"] > 0  # DP on by default
        view = devices[0]._call("GET", "/v1/rounds/current").json()  # the flags reached it
        assert view["evaluation"]["max_se"] == 1e-9 and view["evaluation"]["max_events"] == 2
        assert status["privacy"]["rounds"] == 2  # both releases accounted
    finally:
        server.stop()
        for d in devices:
            d.close()
            d.store.close()
