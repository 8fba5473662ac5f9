"""The layer contracts (import-linter, ``make lint``) hold, and a broken one fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = REPO / "tools" / "lint_layers.py"

pytest.importorskip("importlinter")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LINT), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _copy_sources(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("edgerec", "runtime", "converters"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_contracts_are_kept(tmp_path: Path) -> None:
    result = _lint(_copy_sources(tmp_path / "src"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("importer", "line", "message"),
    [
        (
            "runtime/errors.py",
            "from edgerec.coordinator import errors as _coordinator_errors  # noqa",
            "edgerec.runtime is not allowed to import edgerec.coordinator",
        ),
        (
            "edgerec/federated/clipping.py",
            "import edgerec.simulation  # noqa",
            "edgerec.federated is not allowed to import edgerec.simulation",
        ),
        (
            "edgerec/vocab.py",
            "import edgerec.data  # noqa",
            "edgerec.vocab is not allowed to import edgerec.data",
        ),
        (
            "runtime/ranking.py",
            "import tensorflow  # noqa",
            "edgerec.runtime is not allowed to import tensorflow",
        ),
    ],
)
def test_a_broken_contract_fails(tmp_path: Path, importer: str, line: str, message: str) -> None:
    root = _copy_sources(tmp_path / "src")
    path = root / importer
    path.write_text(path.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    result = _lint(root)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout
