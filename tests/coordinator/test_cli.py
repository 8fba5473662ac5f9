"""``edgerec coordinator`` open-round / status / abort-round / keygen on a database."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edgerec.cli import main
from edgerec.coordinator.security import EnrollKeys
from edgerec.coordinator.service import Coordinator
from edgerec.coordinator.storage import open_storage
from tests.coordinator.harness import ENROLL_KEY, MODEL


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/c.db"
    co = Coordinator(open_storage(url), MODEL, EnrollKeys([ENROLL_KEY]))
    for _ in range(3):
        co.devices.enroll(ENROLL_KEY)
    co.close()
    return url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["-q", "coordinator", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_open_status_abort(db, capsys):
    code, out, _ = run(
        capsys,
        "open-round",
        "--db",
        db,
        "--cohort-target",
        "3",
        "--min-cohort",
        "2",
        "--epochs",
        "2",
        "--json",
    )
    assert code == 0
    opened = json.loads(out)
    assert opened["round"] == 1 and opened["state"] == "advertise"
    code, out, _ = run(capsys, "status", "--db", db, "--json")
    status = json.loads(out)
    assert code == 0 and status["round"]["state"] == "advertise" and status["devices"] == 3
    code, out, _ = run(capsys, "status", "--db", db)
    assert "round      1 advertise" in out and "head       v0" in out
    code, _, err = run(
        capsys, "open-round", "--db", db, "--cohort-target", "3", "--min-cohort", "2"
    )
    assert code == 2 and "still advertise" in err
    code, out, _ = run(capsys, "abort-round", "--db", db, "1")
    assert code == 0 and "failed" in out
    code, _, err = run(capsys, "abort-round", "--db", db, "1")
    assert code == 2 and "already ended" in err


def test_budget_exhausted_exits_3(db, capsys):
    code, _, err = run(
        capsys,
        "open-round",
        "--db",
        db,
        "--cohort-target",
        "3",
        "--min-cohort",
        "2",
        "--noise-multiplier",
        "0.5",
        "--target-epsilon",
        "0.01",
    )
    assert code == 3 and "privacy budget exhausted" in err


def test_uninitialised_database_is_a_clear_error(tmp_path: Path, capsys):
    code, _, err = run(capsys, "status", "--db", f"sqlite:///{tmp_path}/new.db")
    assert code == 2 and "not initialised" in err


def test_keygen(tmp_path: Path, capsys):
    out = tmp_path / "secrets" / "enroll.key"
    assert run(capsys, "keygen", "--out", str(out))[0] == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(out.read_text().strip()) >= 40
    assert EnrollKeys.from_file(out).enabled
    assert run(capsys, "keygen", "--out", str(out))[0] == 2


def test_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit):
        main(["coordinator", "--help"])
    out = capsys.readouterr().out
    for action in ("serve", "open-round", "status", "abort-round", "keygen"):
        assert action in out
