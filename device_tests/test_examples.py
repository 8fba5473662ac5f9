"""The example programs (``examples/``) run against the bundle under test.

Skipped where ``examples/`` was not copied next to ``device_tests/`` and under
emulation (a subprocess of the emulated interpreter cannot be started directly).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples_dir(profile) -> Path:
    if not (EXAMPLES / "quickstart.py").is_file():
        pytest.skip("examples/ is not next to device_tests/ on this device")
    if profile.emulated:
        pytest.skip("subprocesses of an emulated interpreter need binfmt_misc")
    return EXAMPLES


def _run(args: list[str], stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_quickstart(examples_dir: Path, bundle_path: Path) -> None:
    proc = _run([str(examples_dir / "quickstart.py"), str(bundle_path), "--k", "3", "--runs", "20"])
    assert proc.returncode == 0, proc.stderr
    assert "accelerator:" in proc.stdout and "p50" in proc.stdout
    assert proc.stdout.count(". item ") == 3


def test_kiosk_piped_json(examples_dir: Path, bundle_path: Path, reference_histories, tmp_path):
    first, second = reference_histories[0][:2]
    script = f"{first}\nbuy {second}\nnot-an-item\nhistory\nstats\nbogus command here\nquit\n"
    proc = _run(
        [
            str(examples_dir / "raspberry_pi" / "kiosk.py"),
            "--bundle",
            str(bundle_path),
            "--store",
            str(tmp_path / "kiosk.db"),
            "--k",
            "4",
            "--json",
        ],
        stdin=script,
    )
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [a["type"] for a in answers]
    assert kinds == [
        "recommendations",
        "recommendations",
        "note",
        "recommendations",
        "history",
        "stats",
        "error",
    ]
    assert all(len(a["items"]) == 4 for a in answers if a["type"] == "recommendations")
    assert [e["event"] for e in answers[4]["events"]] == ["view", "purchase", "view"]


def test_jetson_example_reports_accelerator(examples_dir: Path, bundle_path: Path) -> None:
    proc = _run(
        [str(examples_dir / "jetson" / "recommend_gpu.py"), str(bundle_path), "--runs", "20"]
    )
    assert proc.returncode == 0, proc.stderr
    assert "accelerators in use:" in proc.stdout
